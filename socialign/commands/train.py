"""`socialign train --method M`: train a model on simulation data with any registered method.

Two parsing stages: this subcommand reads only `--method` and `--config`; the method's own
parser then reads everything else, with one flag per field of the method's config dataclass
(align.flags), so `socialign train --method sft --help` lists SFT's options and a new config
field is a new flag. `--config FILE.yaml` sets those fields from a file, and flags override it
(as TRL's scripts do). Both stages import no torch: the trainer loads only once the flags are
good. For several GPUs: `accelerate launch -m socialign.cli train ...` (add
`--mixed_precision bf16` for bf16 autocast); for several CPU processes:
`torchrun --standalone --nproc_per_node N -m socialign.cli train ...`.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import yaml

from agents.bounded import MAX_YAML_BYTES, BoundedInputError, check_size
from agents.registry import DEFAULT_CHAT_MODEL
from align.flags import add_config_arguments, config_defaults, config_from_args
from align.methods import METHODS, Method, get_method
from socialign.arguments import HelpFormatter
from socialign.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model on exported simulation data (sft, dpo, spin, spo, sppo, mcts-dpo)",
        description="Train a model on data exported from a simulation run.",
        add_help=False,  # --help belongs to the method's parser, which knows the method's flags
        allow_abbrev=False,
    )
    parser.add_argument("--method", choices=sorted(METHODS), default="dpo")
    parser.add_argument("--config", metavar="FILE.yaml")
    parser.set_defaults(func=run, options_parser=method_parser)


def methods_list() -> str:
    """One line per method, for the end of every `socialign train --help`."""
    width = max(len(name) for name in METHODS) + 4
    return "methods (--method M --help lists M's options):\n" + "\n".join(
        textwrap.fill(METHODS[name].description, 100, initial_indent=f"  {name:<{width - 2}}",
                      subsequent_indent=" " * width) for name in METHODS)


def method_parser(args: argparse.Namespace) -> argparse.ArgumentParser:
    """The full `socialign train` parser for the chosen method: common flags, then its config's,
    with defaults from the --config file when there is one."""
    method = get_method(args.method)
    parser = argparse.ArgumentParser(prog="socialign train", description=method.description,
                                     epilog=methods_list(), formatter_class=HelpFormatter)
    parser.add_argument("--method", choices=sorted(METHODS), default=method.name, help="training method")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML mapping of this method's options (e.g. `lr: 1.0e-5`, `lora: {r: 8}`); "
                             "flags given here override it")
    parser.add_argument("--data", required=method.default_data is None, default=method.default_data,
                        help=method.data_help)
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="model alias, local path or hub id")
    parser.add_argument("--out", required=True, help="output directory (model, metrics, checkpoints)")
    if "resume" not in method.unsupported:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    else:
        parser.set_defaults(resume=False)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_arguments(parser, method.config, method.unsupported)
    if getattr(args, "config", None):
        _set_file_defaults(parser, method, args.config)
    return parser


def _set_file_defaults(parser: argparse.ArgumentParser, method: Method, path: str) -> None:
    try:
        check_size(Path(path), MAX_YAML_BYTES, "the config file")
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (BoundedInputError, yaml.YAMLError) as error:
        parser.error(f"--config {path}: {str(error).splitlines()[0]}")
    except OSError as error:
        parser.error(f"--config {path}: cannot read ({error.strerror or error})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of {method.name} options")
    try:
        config_defaults(parser, method.config, values, method.unsupported)
    except ValueError as error:
        parser.error(f"--config {path}: {error}")


def run(args) -> int:
    method = get_method(args.method)
    try:
        config = config_from_args(method.config, args, method.unsupported)
    except ValueError as error:
        raise UserError(f"invalid training options: {error}") from None

    from align.processes import process_state  # torch, transformers, peft: only once we train
    from align.progress import set_quiet
    from align.run import train

    set_quiet(args.quiet)

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
