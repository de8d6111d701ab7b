"""`socialign export RUN_DIR`: write pairs, ranked, critiques, sft and ratings JSONL files."""

from __future__ import annotations

from sandbox import export_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="turn a run's records into TRL-format training files")
    parser.add_argument("run_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    counts = export_run(args.run_dir)
    for kind, count in counts.items():
        print(f"{kind:<10} {count:>6}  {args.run_dir}/export/{kind}.jsonl")
    return 0
