"""How often the base model solves the built-in arithmetic problems (greedy), per difficulty.

The arithmetic scenario is tuned so the base model solves 20-60%: low enough for search to find
better steps, high enough that search finds correct answers at all. Usage:
    python bench/arithmetic_base.py [--model NAME] [--operations 2] [--max-number 5] [--multiply] [--count 80]
(the defaults are the built-in arithmetic scenario's difficulty)
"""

from __future__ import annotations

import argparse

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.registry import DEFAULT_CHAT_MODEL
from scenarios.arithmetic import Difficulty, is_correct, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL)
    parser.add_argument("--operations", type=int, nargs="+", default=[2])
    parser.add_argument("--max-number", type=int, nargs="+", default=[5])
    parser.add_argument("--multiply", action="store_true", help="also doubling, groups and shares (else + and - only)")
    parser.add_argument("--count", type=int, default=80)
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--show", type=int, default=0, help="print this many answers")
    args = parser.parse_args()
    backend = HFBackend(args.model)
    for operations in args.operations:
        for max_number in args.max_number:
            difficulty = Difficulty(operations=operations, max_number=max_number, multiply=args.multiply)
            batch = problems(args.split, args.count, difficulty)
            requests = [GenerationRequest(p.messages(), temperature=0.0, max_new_tokens=args.max_new_tokens) for p in batch]
            answers = [completions[0].text for completions in backend.generate(requests)]
            solved = sum(is_correct(text, p.answer) for text, p in zip(answers, batch))
            for p, text in list(zip(batch, answers))[: args.show]:
                print(f"--- {p.text} (answer {p.answer})\n{text}")
            print(f"{args.model} greedy, {args.max_new_tokens} new tokens, {args.count} {args.split} problems, "
                  f"{difficulty}: solved {solved}/{len(batch)} = {solved / len(batch):.0%}")


if __name__ == "__main__":
    main()
