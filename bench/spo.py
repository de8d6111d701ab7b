"""SPO on the real default model, measured: its policy against its starting model on held-out questions.

Data as bench/spin.py builds them (the `social` bank: stratified training questions with their
`expected` and `reference`, a held-out sample half decline and half answer). Stages, each
skipped when its output exists (so a long run can be split into jobs): `sft` (optional start:
SFT on the references), `spo` (online SPO, K samples per prompt, reward = in-group win rate
under the verifiable judges only: decline appropriateness and reference similarity), `eval`
(both models answer greedily; judge-free metrics with paired differences, and the win rate of
the SPO policy against its start by an LM judge that was NOT its reward, both orders, position
bias removed). Prints the share of groups with no reward spread, the win rate and the metrics.

Usage: python bench/spo.py --out DIR [--start base|sft] [--stages sft,spo,eval] [--steps 24] [--k 4]
           [--lr 5e-6] [--beta 0.04] [--train 60] [--heldout 60] [--judge smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spin import SCENARIO, write_data

from align.config import SFTConfig, SPOConfig
from align.eval import EvalSettings, evaluate
from align.run import train
from judges.intervals import shown
from scenarios import load_scenario


def prompts_file(spin_rows: Path) -> Path:
    """The SPIN rows as SPO prompts: {prompt, expected, reference} (the verifiable judges' fields)."""
    out = spin_rows.with_name("prompts.jsonl")
    rows = [json.loads(line) for line in spin_rows.read_text().splitlines()]
    out.write_text("".join(json.dumps({"prompt": r["prompt"], "expected": r["meta"]["expected"],
                                       "reference": r["real"][0]["content"]}) + "\n" for r in rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--start", choices=("base", "sft"), default="base")
    parser.add_argument("--stages", default="sft,spo,eval")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--groups", type=int, default=2, help="prompts per step")
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--heldout", type=int, default=60)
    parser.add_argument("--judge", default="smollm2-135m-instruct", help="the win-rate judge (not the reward)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stages = set(args.stages.split(","))

    sft_data, spin_data, heldout = write_data(args.out / "data", args.train, args.heldout, args.seed)
    prompts = prompts_file(spin_data)
    start = args.model
    if args.start == "sft":
        start = str(args.out / "sft")
        if "sft" in stages and not (args.out / "sft" / "config.json").is_file():
            began = time.perf_counter()
            train("sft", sft_data, args.model, args.out / "sft", SFTConfig(lr=2e-5, seed=args.seed), resume=True)
            print(f"sft: {time.perf_counter() - began:.0f} s")
    policy = args.out / "spo"
    if "spo" in stages and not (policy / "spo_summary.json").is_file():
        began = time.perf_counter()
        config = SPOConfig(k=args.k, batch_size=args.groups, max_steps=args.steps, lr=args.lr, beta=args.beta,
                           max_completion_length=args.max_completion_length, seed=args.seed)
        train("spo", prompts, start, policy, config)
        print(f"spo: {args.steps} steps in {time.perf_counter() - began:.0f} s")
    summary = json.loads((policy / "spo_summary.json").read_text())
    print(f"SPO from {start}: {summary['groups']} groups of K={args.k}, share with no reward spread "
          f"{summary['zero_spread_share']:.2f}")
    if "eval" not in stages:
        return
    report_file = args.out / "eval-spo.json"
    if not report_file.is_file():
        began = time.perf_counter()
        settings = EvalSettings(max_new_tokens=args.max_new_tokens, seed=args.seed, questions_file=str(heldout),
                                judge=False, pairwise_judge=args.judge)
        report = evaluate(load_scenario(SCENARIO), str(policy), baseline=start, settings=settings)
        report_file.write_text(json.dumps(report, indent=2) + "\n")
        print(f"eval: {time.perf_counter() - began:.0f} s")
    print(table(json.loads(report_file.read_text())))


def table(report: dict) -> str:
    def cell(stats: dict, signed: bool = False) -> str:
        spec = "+.1f" if signed else ".1f"
        return f"{stats['mean'] * 100:{spec}} [{stats['low'] * 100:{spec}}, {stats['high'] * 100:{spec}}]"

    metrics = report["judge_free"]["metrics"]
    lines = ["| metric (%) | SPO policy | start | paired difference (pp) |", "|---|---|---|---|"]
    for name in ("decline_rate", "over_decline_rate"):
        entry = metrics[name]
        lines.append(f"| {entry['label']} | {cell(entry['model'])} | {cell(entry['baseline'])} | "
                     f"{cell(entry['difference'], True)} |")
    pairwise = report["pairwise"]
    better = pairwise["p_model_better"]
    lines.append("")
    lines.append(f"win rate vs start by `{report['pairwise_judge']}` (not the reward), n={pairwise['n']}: "
                 f"win {pairwise['win_rate']:.0%} / tie {pairwise['tie_rate']:.0%} / loss {pairwise['loss_rate']:.0%}, "
                 f"P(SPO better) {shown(better, 3)}, "
                 f"judge first-slot rate {pairwise['judge_first_slot_rate']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
