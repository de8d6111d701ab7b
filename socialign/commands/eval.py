"""`socialign eval --model A [--baseline B] [--scenario S | --questions FILE] [--no-judge] [--pairwise-judge J]`.

Judge-free measures (decline, over-decline, similarity to the reference, length, repetition)
always; observer scores and the pairwise win rate unless --no-judge; `--pairwise-judge J`
names the pairwise judge (with --no-judge: the win rate against the baseline is then the only
judged part).
"""

from __future__ import annotations

from align.eval import EvalSettings, evaluate, markdown_table, write_report
from scenarios import load_scenario
from scenarios.schema import MAX_NEW_TOKENS
from socialign.arguments import at_least, output_dir, seed


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a model on held-out questions or a question file")
    parser.add_argument("--model", required=True, help="trained model dir, alias or path")
    parser.add_argument("--baseline", help="compare against this model (pairwise, both orders)")
    parser.add_argument("--scenario", default="quick",
                        help="built-in name or YAML path: its held-out questions, observers and embedder")
    parser.add_argument("--questions", metavar="FILE",
                        help="score on this file instead of the held-out split: a bank YAML, JSONL or CSV with a "
                        "prompt column (prompt, question, text or behavior) and optional expected (decline|answer)")
    parser.add_argument("--no-judge", action="store_true",
                        help="judge-free measures only: no observer scores, no pairwise (much faster)")
    parser.add_argument("--pairwise-judge", metavar="MODEL",
                        help="with --baseline: this model compares the two answers (both orders) instead of the "
                        "observers' model; kept with --no-judge")
    parser.add_argument("--limit", type=at_least(1, int, 1_000_000), help="evaluate at most this many questions (a seeded sample)")
    parser.add_argument("--max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS), default=128)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--out", type=output_dir, help="write eval.json and eval.md here (default: print the table only)")
    parser.set_defaults(func=run)


def run(args) -> int:
    loaded = load_scenario(args.scenario)
    settings = EvalSettings(limit=args.limit, max_new_tokens=args.max_new_tokens, seed=args.seed,
                            questions_file=args.questions, judge=not args.no_judge,
                            pairwise_judge=args.pairwise_judge)
    report = evaluate(loaded, args.model, args.baseline, settings)
    print(markdown_table(report))
    if args.out:
        json_path, markdown_path = write_report(report, args.out)
        print(f"report: {json_path}\ntable:  {markdown_path}")
    return 0
