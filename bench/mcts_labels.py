"""Do the step labels mean something? Rollouts from chosen vs rejected prefixes, on exact answers.

For every step pair of a steps file (an arithmetic run's export/steps.jsonl, or an MCTS-DPO
iteration's data.jsonl; rows need ``meta.answer``), the model completes the reply R times
after prompt + prefix + chosen and R times after prompt + prefix + rejected (sampled, seeded
per pair and side, all in one batched call). Reported: the share of rollouts that reach the
exact answer from each side (pooled, Wilson 95%), and the per-pair difference in solve rate
(chosen - rejected; Student t 95%). A search whose labels carry signal solves more from chosen.

Usage: python bench/mcts_labels.py STEPS_OR_RUN [--model smollm2-135m-instruct] [--rollouts 4]
"""

from __future__ import annotations

import argparse

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.registry import DEFAULT_CHAT_MODEL
from agents.seeding import derive_seed
from align.mcts_dpo import load_steps, locate_steps
from judges.intervals import mean_t, wilson
from scenarios.arithmetic import is_correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", help="steps JSONL, or a run directory (its export/steps.jsonl)")
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    rows = [row for row in load_steps(locate_steps(args.steps)) if row.meta.get("answer") is not None]
    backend = HFBackend(args.model)
    requests = [
        GenerationRequest([m.model_dump() for m in row.prompt], prefix=row.prefix + step, n=args.rollouts,
                          temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                          seed=derive_seed("mcts-labels", index, side))
        for index, row in enumerate(rows) for side, step in (("chosen", row.chosen), ("rejected", row.rejected))
    ]
    results = backend.generate(requests)
    solved = {"chosen": [], "rejected": []}
    for index, row in enumerate(rows):
        for side, step, completions in (("chosen", row.chosen, results[2 * index]),
                                        ("rejected", row.rejected, results[2 * index + 1])):
            solved[side].append([is_correct(row.prefix + step + c.text, row.meta["answer"]) for c in completions])
    for side, outcomes in solved.items():
        flat = [o for pair in outcomes for o in pair]
        rate = wilson(sum(flat), len(flat))
        print(f"{side:>8}: {rate['count']}/{rate['n']} rollouts solved = {rate['mean']:.1%} "
              f"[{rate['low']:.1%}, {rate['high']:.1%}]")
    difference = mean_t([sum(c) / len(c) - sum(r) / len(r) for c, r in zip(solved["chosen"], solved["rejected"])])
    low = "-" if difference["low"] is None else f"{difference['low']:+.1%}"
    high = "-" if difference["high"] is None else f"{difference['high']:+.1%}"
    print(f"chosen - rejected, per pair ({len(rows)} pairs, {args.rollouts} rollouts a side, {args.model}, "
          f"T={args.temperature}): {difference['mean']:+.1%} [{low}, {high}]")


if __name__ == "__main__":
    main()
