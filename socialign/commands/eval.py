"""`socialign eval --model A [--baseline B] [--scenario S | --questions FILE...] [--public sample|full] [--no-judge]`.

Judge-free measures (decline, over-decline, similarity to the reference, length, repetition)
always; observer scores and the pairwise win rate unless --no-judge; `--pairwise-judge J`
names the pairwise judge (with --no-judge: the win rate against the baseline is then the only
judged part). Further question files and the public sets (`--public`, read from
$SOCIALIGN_EVALSETS or ../shared/evalsets) each get a judge-free table of their own.
"""

from __future__ import annotations

from align import public_sets
from align.eval import EvalSettings, evaluate, markdown_table, write_report
from align.progress import set_quiet
from scenarios import load_scenario
from scenarios.schema import MAX_NEW_TOKENS
from socialign.arguments import at_least, output_dir, seed
from socialign.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a model on held-out questions or a question file")
    parser.add_argument("--model", required=True, help="trained model dir, alias or path")
    parser.add_argument("--backend", choices=("hf", "openai", "vllm"), default="hf",
                        help="how --model answers: loaded here (hf), an OpenAI-compatible server (with --base-url) "
                        "or an in-process vLLM engine; the baseline always loads here (default: %(default)s)")
    parser.add_argument("--base-url", help="the server of --backend openai, e.g. http://localhost:8000/v1")
    parser.add_argument("--baseline", help="compare against this model (pairwise, both orders)")
    parser.add_argument("--scenario", default="quick",
                        help="built-in name or YAML path: its held-out questions, observers and embedder")
    parser.add_argument("--questions", metavar="FILE", nargs="+",
                        help="score on these files instead of the held-out split (the first one is judged, each "
                        "gets its own judge-free table): a bank YAML, JSONL or CSV with a prompt column (prompt, "
                        "question, text or behavior) and optional expected (decline|answer)")
    parser.add_argument("--public", choices=public_sets.MODES, default="off",
                        help="also score the public sets (AdvBench, XSTest): a seeded sample (100 AdvBench, 100 "
                        "XSTest-safe, 50 XSTest-unsafe) or in full (default: %(default)s)")
    parser.add_argument("--evalsets", metavar="DIR",
                        help=f"where the public sets lie (default: ${public_sets.ENVIRONMENT}, else "
                        f"{public_sets.DEFAULT_DIR})")
    parser.add_argument("--no-judge", action="store_true",
                        help="judge-free measures only: no observer scores, no pairwise (much faster)")
    parser.add_argument("--pairwise-judge", metavar="MODEL",
                        help="with --baseline: this model compares the two answers (both orders) instead of the "
                        "observers' model; kept with --no-judge")
    parser.add_argument("--limit", type=at_least(1, int, 1_000_000), help="evaluate at most this many questions (a seeded sample)")
    parser.add_argument("--max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS), default=128,
                        help="answer length on the held-out split or the first file (default: %(default)s)")
    parser.add_argument("--extra-max-new-tokens", type=at_least(1, int, MAX_NEW_TOKENS), default=48,
                        help="answer length on further files and the public sets, whose measure is whether the "
                        "opening declines (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=seed, default=0,
                        help="seed of the sampled questions (--limit, --public sample) (default: %(default)s)")
    parser.add_argument("--out", type=output_dir, help="write eval.json and eval.md here (default: print the table only)")
    parser.set_defaults(func=run)


def run(args) -> int:
    set_quiet(args.quiet)
    loaded = load_scenario(args.scenario)
    first, *more = args.questions or [None]
    settings = EvalSettings(limit=args.limit, max_new_tokens=args.max_new_tokens, seed=args.seed,
                            questions_file=first, judge=not args.no_judge,
                            pairwise_judge=args.pairwise_judge, extra_max_new_tokens=args.extra_max_new_tokens,
                            backend=args.backend, backend_options={"base_url": args.base_url} if args.base_url else {})
    extra = public_sets.file_sets(more) + requested_public_sets(args.public, args.evalsets, args.seed)
    report = evaluate(loaded, args.model, args.baseline, settings, extra_sets=extra)
    print(markdown_table(report))
    if args.out:
        json_path, markdown_path = write_report(report, args.out)
        print(f"report: {json_path}\ntable:  {markdown_path}")
    return 0


def requested_public_sets(mode: str, override: str | None, seed: int) -> list[public_sets.QuestionSet]:
    """The public sets ``--public`` asks for; absent ones are skipped in one line (an error under CI=true)."""
    if mode == "off":
        return []
    try:
        directory, skipped = public_sets.locate(override)
    except public_sets.EvalsetsMissing as error:
        raise UserError(str(error)) from None
    if directory is None:
        print(skipped)
        return []
    return public_sets.public_sets(directory, mode, seed)
