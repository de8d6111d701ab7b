"""`socialign train --method M`: train a model on simulation data with any registered method.

Two parsing stages: this subcommand reads only `--method`; the method's own parser then reads
everything else, with one flag per field of the method's config dataclass (align.flags), so
`socialign train --method sft --help` lists SFT's options and a new config field is a new flag.
Both stages import no torch: the trainer loads only once the flags are good. For several GPUs:
`accelerate launch -m socialign.cli train ...` (add `--mixed_precision bf16` for bf16 autocast);
for several CPU processes: `torchrun --standalone --nproc_per_node N -m socialign.cli train ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.registry import DEFAULT_CHAT_MODEL
from align.flags import add_config_arguments, config_from_args
from align.methods import METHODS, get_method
from socialign.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on exported simulation data (DPO, SFT, ...)",
        description="Train a model on data exported from a simulation run.",
        add_help=False,  # --help belongs to the method's parser, which knows the method's flags
        allow_abbrev=False,
    )
    parser.add_argument("--method", choices=sorted(METHODS), default="dpo")
    parser.set_defaults(func=run, options_parser=method_parser)


def method_parser(args: argparse.Namespace) -> argparse.ArgumentParser:
    """The full `socialign train` parser for the chosen method: common flags, then its config's."""
    method = get_method(args.method)
    parser = argparse.ArgumentParser(prog="socialign train", description=method.description)
    parser.add_argument(
        "--method",
        choices=sorted(METHODS),
        default=method.name,
        help="training method (default: %(default)s)",
    )
    parser.add_argument("--data", required=method.default_data is None, default=method.default_data,
                        help=method.data_help)
    parser.add_argument(
        "--model", default=DEFAULT_CHAT_MODEL, help="model alias, local path or hub id (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="output directory (model, metrics, checkpoints)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    add_config_arguments(parser, method.config)
    return parser


def run(args) -> int:
    method = get_method(args.method)
    try:
        config = config_from_args(method.config, args)
    except ValueError as error:
        raise UserError(f"invalid training options: {error}") from None

    from align.processes import process_state  # torch, transformers, peft: only once we train
    from align.run import train

    if method.iterative and not (method.trains_exports and _is_export(args.data)):
        return _run_iterations(method, args, config)
    result = train(method, args.data, args.model, args.out, config, resume=args.resume)
    if not process_state().is_main_process:
        return 0  # one summary per launch, not one per process
    last = result.history[-1] if result.history else {}
    metrics = ", ".join(f"{key} {last.get(key, float('nan')):.4f}" for key in method.summary)
    print(f"trained {result.step} steps ({metrics}); model: {result.model_dir}")
    return 0


def _is_export(data: str) -> bool:
    """A JSONL file or a run directory (not a scenario name or YAML)."""
    path = Path(data)
    return path.is_dir() or path.suffix == ".jsonl"


def _run_iterations(method, args, config) -> int:
    from align.iterate import run_iterations

    result = run_iterations(method.iterative_spec(), args.data, args.model, args.out, config, resume=args.resume)
    print(f"{config.iterations} iteration(s); table: {result.out_dir / 'iterations.md'}; model: {result.model_dir}")
    return 0
