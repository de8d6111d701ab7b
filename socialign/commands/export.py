"""`socialign export RUN_DIR`: write pairs, ranked, critiques, sft, spin, ratings, prompts and steps JSONL files."""

from __future__ import annotations

from sandbox.export import EXPORT_DIR, FILTERS_FILE, export_run, read_filters
from scenarios.schema import RANK_BY


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="turn a run's records into TRL-format training files")
    parser.add_argument("run_dir", help="a run directory (what simulate --out wrote)")
    parser.add_argument("--rank-by", default=None, metavar="|".join(RANK_BY),
                        help="rank answers by one judge or the judges' weighted mix (default: the scenario's judges.rank_by)")
    parser.set_defaults(func=run)


def run(args) -> int:
    counts = export_run(args.run_dir, args.rank_by)
    for kind, count in counts.items():
        print(f"{kind:<10} {count:>6}  {args.run_dir}/{EXPORT_DIR}/{kind}.jsonl")
    report = read_filters(args.run_dir)
    print(filters_summary(report))
    print(f"filter counts: {args.run_dir}/{EXPORT_DIR}/{FILTERS_FILE}")
    return 0


def filters_summary(report: dict) -> str:
    """Rows each filter dropped, answers cleaned, questions kept, what the bank cannot give."""
    lines = []
    for name, scenario in report["scenarios"].items():
        weights = ", ".join(f"{k} {v:g}" for k, v in scenario["weights"].items())
        lines.append(f"{name}: ranked by {scenario['rank_by']} (weights: {weights}); "
                     f"{scenario['reference_questions']} reference questions")
        lines += [f"  note: {note}" for note in scenario["unavailable"]]
    dropped = "; ".join(f"{kind} " + ", ".join(f"{f} {n}" for f, n in filters.items())
                        for kind, filters in report["dropped"].items())
    lines.append(f"dropped by filter: {dropped}")
    answers = report["answers"]
    lines.append(f"answers: {answers.get('total', 0)}, vetoed {answers.get('vetoed', 0)}, meta-talk cleaned "
                 f"{answers.get('meta_talk_cleaned', 0)}, dropped {answers.get('meta_talk_dropped', 0)}")
    questions = report["questions"]
    if questions["asked"]:
        lines.append(f"questions asked {questions['asked']}: with a chosen or sft row from the run "
                     f"{questions['with_a_run_row']} ({questions['run_share']:.0%}), with any row incl. references "
                     f"{questions['with_a_row']} ({questions['share']:.0%})")
    return "\n".join(lines)
