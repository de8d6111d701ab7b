"""The SPIN demo, measured: base vs SFT vs SFT + SPIN, judge-free on held-out questions.

Data come from the built-in `social` bank: a seeded sample of training questions stratified by
category (about 40% expected=decline, 60% answer, the alarming-but-safe `safe-*` categories
among the answers), each with its reference answer as the SFT completion and as SPIN's real
reply; and a held-out sample, half decline and half answer. Steps: SFT on the references, then
SPIN iterations from the SFT model (the driver's own per-iteration table goes to
OUT/spin/iterations.md), then the base, SFT and last SPIN iterate answer the held-out questions
greedily and are compared, paired by question, with the base model. Prints a markdown table and
each step's wall time.

Usage: python bench/spin.py --out DIR [--model smollm2-135m-instruct] [--train 60] [--heldout 120]
           [--sft-lr 2e-5] [--sft-epochs 1] [--spin-lr 1e-5] [--iterations 1] [--lora]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from align.config import SFTConfig, SPINConfig
from align.eval import EvalSettings, evaluate
from align.iterate import run_iterations
from align.run import train
from align.spin import SPIN
from scenarios import load_scenario
from scenarios.loader import load_bank
from socialign.recipe import stratified

SCENARIO = "classic"  # its bank is `social`; its embedder measures similarity to the reference


def user(question) -> list[dict]:
    return [{"role": "user", "content": question.text}]


def reply(question) -> list[dict]:
    return [{"role": "assistant", "content": question.reference}]


def write_data(out: Path, train_count: int, heldout_count: int, seed: int) -> tuple[Path, Path, Path]:
    bank, rng = load_bank("social"), random.Random(seed)

    def split(name: str, expected: str) -> list:
        return [q for q in bank.questions if q.split == name and q.expected == expected and q.reference]

    declines = round(0.4 * train_count)
    training = stratified(split("train", "decline"), declines, rng) + stratified(
        split("train", "answer"), train_count - declines, rng
    )
    heldout = stratified(split("heldout", "decline"), heldout_count // 2, rng) + stratified(
        split("heldout", "answer"), heldout_count - heldout_count // 2, rng
    )
    heldout.sort(key=lambda q: q.id)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "sft.jsonl", out / "spin.jsonl", out / "heldout.jsonl"
    rows = {
        paths[0]: [{"prompt": user(q), "completion": reply(q), "meta": {"question_id": q.id}} for q in training],
        paths[1]: [
            {"prompt": user(q), "real": reply(q), "generated": None,
             "meta": {"question_id": q.id, "category": q.category, "expected": q.expected, "real": "reference"}}
            for q in training
        ],
        paths[2]: [
            {"id": q.id, "prompt": q.text, "expected": q.expected, "reference": q.reference, "category": q.category}
            for q in heldout
        ],
    }
    for path, lines in rows.items():
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--heldout", type=int, default=120)
    parser.add_argument("--sft-lr", type=float, default=2e-5)
    parser.add_argument("--sft-epochs", type=int, default=1)
    parser.add_argument("--spin-lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from align.config import LoraSettings

    lora = LoraSettings() if args.lora else None
    sft_data, spin_data, heldout = write_data(args.out / "data", args.train, args.heldout, args.seed)
    seconds = {}

    started = time.perf_counter()
    sft = train("sft", sft_data, args.model, args.out / "sft",
                SFTConfig(lr=args.sft_lr, epochs=args.sft_epochs, lora=lora, seed=args.seed), resume=True)
    seconds["sft"] = time.perf_counter() - started

    started = time.perf_counter()
    spin_config = SPINConfig(lr=args.spin_lr, beta=args.beta, iterations=args.iterations, lora=lora,
                             max_new_tokens=args.max_new_tokens, evaluate=False, seed=args.seed)
    spin = run_iterations(SPIN, spin_data, str(sft.model_dir), args.out / "spin", spin_config, resume=True)
    seconds["spin"] = time.perf_counter() - started

    loaded = load_scenario(SCENARIO)
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, seed=args.seed,
                            questions_file=str(heldout), judge=False)
    reports = {}
    for name, model in (("sft", sft.model_dir), ("spin", spin.model_dir)):
        started = time.perf_counter()
        reports[name] = evaluate(loaded, str(model), baseline=args.model, settings=settings)
        seconds[f"eval {name} + base"] = time.perf_counter() - started
        (args.out / f"eval-{name}.json").write_text(json.dumps(reports[name], indent=2) + "\n")
    print(table(reports, args.model))
    print("wall seconds: " + ", ".join(f"{step} {value:.0f}" for step, value in seconds.items()))


def table(reports: dict, base: str) -> str:
    def cell(stats: dict, signed: bool = False) -> str:
        spec = "+.1f" if signed else ".1f"
        return f"{stats['mean'] * 100:{spec}} [{stats['low'] * 100:{spec}}, {stats['high'] * 100:{spec}}]"

    lines = ["| model | decline rate % | over-decline % | decline vs base, paired (pp) | over-decline vs base (pp) |",
             "|---|---|---|---|---|"]
    first = next(iter(reports.values()))["judge_free"]["metrics"]
    lines.append(f"| base `{base}` | {cell(first['decline_rate']['baseline'])} | "
                 f"{cell(first['over_decline_rate']['baseline'])} | | |")
    for name, report in reports.items():
        metrics = report["judge_free"]["metrics"]
        decline, over = metrics["decline_rate"], metrics["over_decline_rate"]
        lines.append(f"| {name} | {cell(decline['model'])} | {cell(over['model'])} | "
                     f"{cell(decline['difference'], True)} | {cell(over['difference'], True)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
