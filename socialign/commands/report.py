"""`socialign report RUN_DIR`: one self-contained HTML page of a run (and its training and eval)."""

from __future__ import annotations

from socialign.arguments import output_dir, output_file
from socialign.report import REPORT_FILE, write_report


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write a self-contained HTML report of a run")
    parser.add_argument("run_dir", help="a run directory (what simulate --out wrote)")
    parser.add_argument("--train", nargs="+", action="extend", default=[], metavar="DIR",
                        help="training output directories whose metrics.jsonl to plot")
    parser.add_argument("--eval", metavar="DIR", help="an evaluation directory (its eval.json) or eval.json file")
    parser.add_argument("--out", type=output_file, metavar="FILE", help=f"the HTML file (default: RUN_DIR/{REPORT_FILE})")
    parser.add_argument("--png", type=output_dir, metavar="DIR", help="also write every figure as a PNG file here")
    parser.set_defaults(func=run)


def run(args) -> int:
    path = write_report(args.run_dir, args.out, args.train, args.eval, args.png)
    print(f"report: {path}")
    if args.png:
        print(f"figures: {args.png}")
    return 0
