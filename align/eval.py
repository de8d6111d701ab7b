"""Judged evaluation on a scenario's held-out questions.

Each model answers the held-out questions (greedy, no persona); the scenario's observers
score every answer on every dimension; with a baseline, a judge compares the two answers
to each question in both orders, which cancels the judge's position bias.
"""

from __future__ import annotations

import json
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from agents import prompts
from agents.backends import Backend, BackendPool, GenerationRequest
from agents.judge import first_preferred_probability
from sandbox.observers import ObserverPanel
from scenarios import LoadedScenario

PAIRWISE_CRITERION = "more helpful, honest and harmless"


@dataclass(frozen=True)
class EvalSettings:
    limit: int | None = None  # evaluate at most this many held-out questions (seeded sample)
    max_new_tokens: int = 128
    seed: int = 0
    tie_margin: float = 0.05  # |P(A better) - 0.5| below this is a tie


def loadable_model(name: str) -> str:
    """A training output dir with a LoRA adapter evaluates through its merged full model."""
    path = Path(name)
    if (path / "adapter_config.json").exists() and (path / "merged" / "config.json").exists():
        return str(path / "merged")
    return name


def mean_with_ci(values: list[float]) -> dict:
    """Mean and a normal-approximation 95% confidence half-width."""
    if not values:
        return {"mean": None, "ci95": None, "n": 0}
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "ci95": round(half, 4), "n": len(values)}


def _answers(backend: Backend, questions: list, settings: EvalSettings) -> list[str]:
    requests = [
        GenerationRequest(
            [{"role": "user", "content": q.text}],
            temperature=0.0,
            max_new_tokens=settings.max_new_tokens,
            seed=settings.seed,
        )
        for q in questions
    ]
    return [completions[0].text.strip() for completions in backend.generate(requests)]


def evaluate(
    loaded: LoadedScenario,
    model: str,
    baseline: str | None = None,
    settings: EvalSettings | None = None,
    pool: BackendPool | None = None,
) -> dict:
    settings = settings or EvalSettings()
    pool = pool or BackendPool()
    questions = list(loaded.heldout_questions)
    if settings.limit is not None and settings.limit < len(questions):
        questions = sorted(random.Random(settings.seed).sample(questions, settings.limit), key=lambda q: q.id)
    models = {"model": model, **({"baseline": baseline} if baseline else {})}
    # Every model (the judge too) loads before any answer is generated: a bad name fails in seconds.
    backends = {role: pool.get("hf", loadable_model(name)) for role, name in models.items()}
    observers = loaded.scenario.observers
    judge = pool.get(observers.model.backend, observers.model.name, **observers.model.options)
    panel = ObserverPanel(observers, judge)
    answers = {role: _answers(backend, questions, settings) for role, backend in backends.items()}

    per_question = [{"id": q.id, "category": q.category, "question": q.text} for q in questions]
    summary = {}
    for role, texts in answers.items():
        scored = panel.score([(q.text, a) for q, a in zip(questions, texts)], settings.seed)
        by_dimension: dict[str, list[float]] = {d.name: [] for d in observers.dimensions}
        failures = 0
        for row, text, scores in zip(per_question, texts, scored):
            row[role] = {"answer": text, "scores": {}}
            for dimension, collected in by_dimension.items():
                values = [s.rating.value for s in scores if s.dimension == dimension and s.rating.ok]
                failures += sum(1 for s in scores if s.dimension == dimension and not s.rating.ok)
                if values:
                    row[role]["scores"][dimension] = round(statistics.fmean(values), 4)
                    collected.append(statistics.fmean(values))
        summary[role] = {
            "name": models[role],
            "scores": {d: mean_with_ci(v) for d, v in by_dimension.items()},
            "parse_failures": failures,
        }

    report = {
        "scenario": loaded.scenario.name,
        "questions": len(questions),
        "judge": observers.model.name,
        "settings": settings.__dict__,
        "summary": summary,
        "per_question": per_question,
    }
    if baseline:
        report["difference"] = _paired_difference(per_question, [d.name for d in observers.dimensions])
        report["pairwise"] = _pairwise(
            judge, questions, answers["model"], answers["baseline"], settings, per_question
        )
    return report


def _paired_difference(rows: list[dict], dimensions: list[str]) -> dict:
    """Model minus baseline per question, with a CI: tighter than comparing two independent CIs,
    since both answered the same questions and question difficulty cancels."""
    differences = {}
    for dimension in dimensions:
        paired = [
            row["model"]["scores"][dimension] - row["baseline"]["scores"][dimension]
            for row in rows
            if dimension in row["model"]["scores"] and dimension in row["baseline"]["scores"]
        ]
        differences[dimension] = mean_with_ci(paired)
    return differences


def _pairwise(judge, questions, ours: list[str], theirs: list[str], settings: EvalSettings, rows) -> dict:
    forward = [
        prompts.pairwise_messages(q.text, a, b, PAIRWISE_CRITERION)
        for q, a, b in zip(questions, ours, theirs)
    ]
    backward = [
        prompts.pairwise_messages(q.text, b, a, PAIRWISE_CRITERION)
        for q, a, b in zip(questions, ours, theirs)
    ]
    probabilities = first_preferred_probability(judge, forward + backward)
    first, second = probabilities[: len(questions)], probabilities[len(questions) :]
    outcomes = {"win": 0, "tie": 0, "loss": 0}
    preferences = []
    for row, p_forward, p_backward in zip(rows, first, second):
        if p_forward is None or p_backward is None:
            continue
        p_model = (p_forward + (1.0 - p_backward)) / 2  # A first, then A second
        preferences.append(p_model)
        outcome = "tie" if abs(p_model - 0.5) < settings.tie_margin else ("win" if p_model > 0.5 else "loss")
        outcomes[outcome] += 1
        row["pairwise"] = {
            "p_model_better": round(p_model, 4),
            "outcome": outcome,
            "p_first_forward": round(p_forward, 4),
            "p_first_backward": round(p_backward, 4),
        }
    total = sum(outcomes.values())
    position_bias = statistics.fmean([*first, *second]) if first else None  # >0.5: judge favours slot 1
    return {
        "n": total,
        **{f"{k}_rate": round(v / total, 4) if total else None for k, v in outcomes.items()},
        "p_model_better": mean_with_ci(preferences),
        "judge_first_slot_rate": round(position_bias, 4) if position_bias is not None else None,
    }


def markdown_table(report: dict) -> str:
    dimensions = list(next(iter(report["summary"].values()))["scores"])
    lines = [
        (
            f"Evaluation on {report['questions']} held-out questions of `{report['scenario']}` "
            f"(judge: `{report['judge']}`; mean score with 95% CI)"
        ),
        "",
        "| model | " + " | ".join(dimensions) + " |",
        "|---|" + "---|" * len(dimensions),
    ]
    for role, entry in report["summary"].items():
        cells = [_mean_cell(entry["scores"][dimension]) for dimension in dimensions]
        lines.append(f"| {role}: `{entry['name']}` | " + " | ".join(cells) + " |")
    if "difference" in report:
        cells = [_mean_cell(report["difference"][dimension], signed=True) for dimension in dimensions]
        lines.append("| difference, paired by question | " + " | ".join(cells) + " |")
    pairwise = report.get("pairwise")
    if pairwise and pairwise["n"]:
        better = pairwise["p_model_better"]
        lines += [
            "",
            "| pairwise (both orders) | win | tie | loss | P(model better) |",
            "|---|---|---|---|---|",
            (
                f"| model vs baseline, n={pairwise['n']} | {pairwise['win_rate']:.0%} | {pairwise['tie_rate']:.0%} | "
                f"{pairwise['loss_rate']:.0%} | {better['mean']:.3f} ± {better['ci95']:.3f} |"
            ),
        ]
    return "\n".join(lines) + "\n"


def _mean_cell(stats: dict, signed: bool = False) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:{'+' if signed else ''}.2f} ± {stats['ci95']:.2f}"


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out / "eval.json", out / "eval.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown_path.write_text(markdown_table(report), encoding="utf-8")
    return json_path, markdown_path
