"""Entry point: `socialign <command> ...`. Each command lives in socialign/commands/<name>.py."""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import sys
from importlib.metadata import version

import socialign.commands as commands_package
from socialign.arguments import HelpFormatter
from socialign.errors import user_error_types


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socialign",
        description="Simulate a society of LM agents to manufacture alignment data; train on it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('socialign')}")
    # Every command's parser shows its defaults in --help.
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND",
        parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter),
    )
    for info in sorted(pkgutil.iter_modules(commands_package.__path__), key=lambda m: m.name):
        importlib.import_module(f"socialign.commands.{info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if hasattr(args, "options_parser"):
        # A command whose flags depend on an earlier choice (train: --method) parses the rest itself.
        args = args.options_parser(args).parse_args(rest, namespace=args)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args) or 0
    except user_error_types() as error:
        print(f"socialign {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"socialign {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
