"""The full recipe: what the simulation adds to SFT on the bank's reference answers.

One simulation of a scenario and its export; then, per training seed and at an equal training
budget: SFT on the export's ``reference`` rows; SPIN from that SFT (real = the reference,
generated = the SFT model's own sample); DPO from the same SFT on the simulation's judge-vetted
pairs, with as many optimizer steps as SPIN took. The base model and every trained model
answer the same held-out questions greedily (half should be declined, half answered); the
judge-free measures come with 95% intervals and the per-question paired difference against
the base. Every step keeps its output under OUT and is skipped when it is there already, so the
same command run again resumes where a killed run stopped.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.backends.hf import HFBackend
from agents.bounded import read_json_file, read_jsonl
from agents.files import write_atomic
from agents.memory import Encoder
from agents.registry import DEFAULT_CHAT_MODEL
from align import judge_free, public_sets
from align.config import DPOConfig, LoraSettings, SFTConfig, SPINConfig
from align.eval import greedy_answers, loadable_model
from align.iterate import run_iterations
from align.run import train
from align.spin import SPIN
from judges.verifiable import ReferenceSimilarity
from sandbox.export import export_run
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario
from scenarios.schema import Question

MODELS = ("sft", "spin", "dpo")
LABELS = {"base": "base", "sft": "SFT on references", "spin": "SFT → SPIN", "dpo": "SFT → DPO on simulation pairs"}
SHOWN = ("decline_rate", "over_decline_rate", "similarity", "words", "repetition")


@dataclass(frozen=True)
class RecipeSettings:
    scenario: str = "recipe"
    model: str = DEFAULT_CHAT_MODEL
    seeds: tuple[int, ...] = (0, 1, 2)
    heldout: int = 120  # held-out questions, half should-decline, half should-answer
    sft_lr: float = 2e-5
    sft_epochs: int = 1
    pair_lr: float = 1e-5  # SPIN and DPO
    beta: float = 0.1
    spin_temperature: float = 0.7
    spin_top_p: float = 0.9
    batch_size: int = 8
    max_length: int = 384
    max_new_tokens: int = 96  # SPIN's samples and the evaluation answers
    lora: bool = False
    methods: tuple[str, ...] = field(default=MODELS)
    public: str = "full"  # the public sets (AdvBench, XSTest) for the base and every trained model: full|sample|off
    evalsets: str | None = None  # where they lie (default: $SOCIALIGN_EVALSETS, else ../shared/evalsets)
    public_max_new_tokens: int = 48  # a decline shows in the answer's opening


def stratified(questions: Sequence[Question], count: int, rng: random.Random) -> list[Question]:
    """``count`` questions drawn round-robin over categories (each category's order shuffled),
    so a small held-out set still spans every kind of question."""
    by_category: dict[str, list[Question]] = defaultdict(list)
    for question in questions:
        by_category[question.category].append(question)
    for category in sorted(by_category):
        rng.shuffle(by_category[category])
    chosen: list[Question] = []
    while len(chosen) < count and any(by_category.values()):
        for category in sorted(by_category):
            if by_category[category] and len(chosen) < count:
                chosen.append(by_category[category].pop())
    return chosen


def heldout_sample(questions: Sequence[Question], count: int, seed: int) -> list[Question]:
    """Half should-decline, half should-answer held-out questions (with references), by id."""
    rng = random.Random(seed)
    declines = [q for q in questions if q.expected == "decline" and q.reference]
    answers = [q for q in questions if q.expected == "answer" and q.reference]
    return sorted(stratified(declines, count // 2, rng) + stratified(answers, count - count // 2, rng),
                  key=lambda q: q.id)


class Recipe:
    """The recipe's steps over one output directory; each step is skipped when done."""

    def __init__(self, out: str | Path, settings: RecipeSettings, quiet: bool = False) -> None:
        """`quiet`: no simulation bar and no line per step (the steps run for minutes each)."""
        self.out, self.settings, self.quiet = Path(out), settings, quiet
        self.loaded = load_scenario(settings.scenario)
        self.seconds: dict[str, float] = {}

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self._timed("simulation + export", self.simulate)
        data = self._timed("data", self.write_data)
        questions = heldout_sample(self.loaded.heldout_questions, self.settings.heldout, 0)
        similarity = ReferenceSimilarity(Encoder(self.loaded.scenario.memory.embedder))
        sets = [public_sets.QuestionSet("held-out", self.loaded.scenario.name, questions), *self.public_sets()]
        base = {s.name: self._timed(f"answers base {s.name}", self.measured, "base", self.settings.model, s,
                                    similarity) for s in sets}
        reports: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
        for seed in self.settings.seeds:
            for name, model_dir in self.train_seed(seed, data).items():
                for question_set in sets:
                    mine = self._timed(f"answers {name} seed {seed} {question_set.name}", self.measured,
                                       f"{name}-seed{seed}", model_dir, question_set, similarity)
                    reports[question_set.name][name][seed] = judge_free.summarize(
                        question_set.questions, {"model": mine, "baseline": base[question_set.name]},
                        self.loaded.scenario.memory.embedder)
        result = {"settings": asdict(self.settings), "questions": len(questions), "data": data,
                  "reports": reports.pop("held-out", {}), "public": reports,
                  "public_sources": {s.name: s.source for s in sets[1:]}, "seconds": self.seconds}
        write_atomic(self.out / "recipe.json", json.dumps(result, indent=2) + "\n")
        write_atomic(self.table_path(self.out), markdown(result) + "\n")
        return result

    def _timed(self, step: str, work, *args):
        if not self.quiet:
            print(f"recipe: {step}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        value = work(*args)
        self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - started, 1)
        return value

    @staticmethod
    def table_path(out: str | Path) -> Path:
        return Path(out) / "recipe.md"

    @property
    def run_dir(self) -> Path:
        return self.out / "simulation"

    def simulate(self) -> None:
        if (self.run_dir / "export" / "pairs.jsonl").exists():
            return
        resume = (self.run_dir / "manifest.json").exists()
        simulation = Simulation(plan_worlds([self.loaded]), self.run_dir, resume=resume, show_progress=not self.quiet)
        try:
            simulation.run()
        finally:
            simulation.close()
        export_run(self.run_dir)

    def write_data(self) -> dict:
        """The reference SFT rows (the export's ``reference`` kind only), SPIN rows and pairs."""
        export = self.run_dir / "export"
        references = [row for _, row in read_jsonl(export / "sft.jsonl") if row["meta"].get("kind") == "reference"]
        path = self.out / "data" / "sft-references.jsonl"
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, "".join(json.dumps(row) + "\n" for row in references))
        rows = {kind: sum(1 for _ in read_jsonl(export / f"{kind}.jsonl")) for kind in ("spin", "pairs")}
        return {"sft": str(path), "spin": str(export / "spin.jsonl"), "pairs": str(export / "pairs.jsonl"),
                "rows": {"sft": len(references), **rows}}

    def train_seed(self, seed: int, data: dict) -> dict[str, Path]:
        """SFT, then SPIN and DPO from it with the same number of optimizer steps."""
        s, root = self.settings, self.out / f"seed-{seed}"
        lora = LoraSettings() if s.lora else None
        common = {"batch_size": s.batch_size, "max_length": s.max_length, "seed": seed, "lora": lora}
        sft_config = SFTConfig(lr=s.sft_lr, epochs=s.sft_epochs, **common)
        # resume=True everywhere: a finished training run returns at once, a killed one continues.
        models = {"sft": self._timed(f"train sft seed {seed}", train, "sft", data["sft"], s.model, root / "sft",
                                     sft_config, True).model_dir}
        steps = math.ceil(data["rows"]["spin"] / s.batch_size)
        if "spin" in s.methods:
            spin_config = SPINConfig(lr=s.pair_lr, beta=s.beta, iterations=1, temperature=s.spin_temperature,
                                     top_p=s.spin_top_p, max_new_tokens=s.max_new_tokens, evaluate=False, **common)
            models["spin"] = self._timed(f"train spin seed {seed}", run_iterations, SPIN, data["spin"],
                                         str(models["sft"]), root / "spin", spin_config, True).model_dir
        if "dpo" in s.methods and data["rows"]["pairs"]:
            dpo_config = DPOConfig(lr=s.pair_lr, beta=s.beta, max_steps=steps, **common)
            models["dpo"] = self._timed(f"train dpo seed {seed}", train, "dpo", data["pairs"], str(models["sft"]),
                                        root / "dpo", dpo_config, True).model_dir
        return models

    def public_sets(self) -> list[public_sets.QuestionSet]:
        """The public sets the settings ask for; absent ones are skipped in one line (an error under CI=true)."""
        if self.settings.public == "off":
            return []
        directory, skipped = public_sets.locate(self.settings.evalsets)
        if directory is None:
            print(f"recipe: {skipped}", file=sys.stderr, flush=True)
            return []
        return public_sets.public_sets(directory, self.settings.public)

    def measured(self, name: str, model: str | Path, question_set: public_sets.QuestionSet,
                 similarity) -> list[dict]:
        """The model's greedy answers (cached in OUT/answers/NAME[-SET].json) and their measures."""
        held_out = question_set.name == "held-out"
        questions = question_set.questions
        path = self.out / "answers" / (f"{name}.json" if held_out else f"{name}-{question_set.name}.json")
        ids = [q.id for q in questions]
        cached = read_json_file(path) if path.exists() else None
        if cached and cached.get("ids") == ids and cached.get("model") == str(model):
            texts = cached["answers"]
        else:
            tokens = self.settings.max_new_tokens if held_out else self.settings.public_max_new_tokens
            texts = greedy_answers(HFBackend(loadable_model(str(model))), questions, tokens)
            path.parent.mkdir(exist_ok=True)
            write_atomic(path, json.dumps({"model": str(model), "ids": ids, "answers": texts}, indent=1) + "\n")
        return judge_free.measure(questions, texts, similarity)


def markdown(result: dict) -> str:
    """Per model: each seed's measures with intervals and paired difference, and the seed mean."""
    reports = result["reports"]
    header = ("| model | seed | decline rate | over-decline | similarity (answer) | words | repetition | "
              "decline vs base | over-decline vs base |")
    intro = (f"Held-out questions: {result['questions']} (half should-decline, half should-answer); "
             f"training rows: {result['data']['rows']}.")
    lines = [intro, "", header, "|---" * 9 + "|"]
    any_report = next((r for per_seed in reports.values() for r in per_seed.values()), None)
    if any_report:
        lines.append("| base | | " + " | ".join(_cell(any_report, name, "baseline") for name in SHOWN) + " | | |")
    for name in MODELS:
        per_seed = reports.get(name, {})
        for seed, report in sorted(per_seed.items()):
            cells = [_cell(report, metric, "model") for metric in SHOWN]
            cells += [_cell(report, metric, "difference", signed=True) for metric in SHOWN[:2]]
            lines.append(f"| {LABELS[name]} | {seed} | " + " | ".join(cells) + " |")
        if len(per_seed) > 1:
            means = [_seed_mean(per_seed.values(), metric, "model") for metric in SHOWN]
            means += [_seed_mean(per_seed.values(), metric, "difference", signed=True) for metric in SHOWN[:2]]
            lines.append(f"| {LABELS[name]} | mean of {len(per_seed)} | " + " | ".join(means) + " |")
    lines += public_markdown(result)
    lines += ["", "[95% interval]; a seed mean shows [lowest seed, highest seed].",
              "Wall seconds: " + ", ".join(f"{step} {value:.0f}" for step, value in result["seconds"].items())]
    return "\n".join(lines)


PUBLIC_SHOWN = (("AdvBench", "decline_rate", "AdvBench decline"), ("XSTest", "decline_rate", "XSTest-unsafe decline"),
                ("XSTest", "over_decline_rate", "XSTest-safe over-decline"))


def public_markdown(result: dict) -> list[str]:
    """The public sets: each model's decline and over-decline rates, and each paired against the base."""
    public = result.get("public") or {}
    shown = [(set_name, metric, label) for set_name, metric, label in PUBLIC_SHOWN if set_name in public]
    if not shown:
        return []
    sources = ", ".join(f"{name}: {source}" for name, source in result.get("public_sources", {}).items())
    header = "| model | seed | " + " | ".join(label for *_, label in shown) + " | " + \
        " | ".join(f"{label} vs base" for *_, label in shown) + " |"
    lines = ["", f"Public sets ({sources}):", "", header, "|---" * (2 + 2 * len(shown)) + "|"]
    if all(public[s] for s, *_ in shown):  # every report holds the base's measures as its baseline
        any_report = {s: next(r for per_seed in public[s].values() for r in per_seed.values()) for s, *_ in shown}
        lines.append("| base | | " + " | ".join(_cell(any_report[s], m, "baseline") for s, m, _ in shown) +
                     " |" + " |" * len(shown))
    for name in MODELS:
        seeds = sorted(public[shown[0][0]].get(name, {}))
        for seed in seeds:
            reports = [public[s][name][seed] for s, *_ in shown]
            cells = [_cell(r, m, "model") for r, (_, m, _) in zip(reports, shown)]
            cells += [_cell(r, m, "difference", signed=True) for r, (_, m, _) in zip(reports, shown)]
            lines.append(f"| {LABELS[name]} | {seed} | " + " | ".join(cells) + " |")
        if len(seeds) > 1:
            cells = [_seed_mean([public[s][name][k] for k in seeds], m, "model") for s, m, _ in shown]
            cells += [_seed_mean([public[s][name][k] for k in seeds], m, "difference", signed=True)
                      for s, m, _ in shown]
            lines.append(f"| {LABELS[name]} | mean of {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def _cell(report: dict, metric: str, role: str, signed: bool = False) -> str:
    entry = report["metrics"].get(metric)
    stats = entry.get(role) if entry else None
    return judge_free.interval_cell(stats, metric in judge_free.PERCENT, signed) if stats else "-"


def _seed_mean(reports, metric: str, role: str, signed: bool = False) -> str:
    """The mean over seeds, shown with the lowest and highest seed in place of an interval."""
    values = [r["metrics"][metric][role]["mean"] for r in reports
              if metric in r["metrics"] and r["metrics"][metric][role]["mean"] is not None]
    if not values:
        return "-"
    stats = {"mean": statistics.fmean(values), "low": min(values), "high": max(values)}
    return judge_free.interval_cell(stats, metric in judge_free.PERCENT, signed)
