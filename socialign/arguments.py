"""Argument types shared by the subcommands: argparse rejects a bad value with exit code 2.

Every number has both bounds: a value too large to use on this machine (a million rounds, a
5000-digit seed) is refused before any work starts, not discovered hours or gigabytes later.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from scenarios.schema import MAX_SEED


def at_least(minimum: float, number: type = int, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` that parses ``number`` within [minimum, maximum]."""

    def parse(text: str):
        if len(text) > 40:
            raise argparse.ArgumentTypeError(f"'{text[:20]}...' is too long to be a number here")
        value = number(text)  # a ValueError becomes argparse's "invalid int value: 'x'"
        if math.isnan(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:,}, got {text}")
        return value

    parse.__name__ = number.__name__
    return parse


seed = at_least(0, int, MAX_SEED)


def output_dir(text: str) -> str:
    """A directory we may create or write into: not a file, under a writable directory."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a directory")
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, so no directory can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is not writable")
    return text


def output_file(text: str) -> str:
    """A file we may create or replace: not a directory, and its directory is (or can be) writable."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, expected a file path")
    output_dir(str(path.parent))
    return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every `--help` shows each option's default and keeps a description's own line breaks.

    A default of None or False says nothing (the option is simply off), so it is not shown; a
    list default is shown as it is typed (`0 1 2`)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == []:
            return action.help or ""
        if isinstance(default, list | tuple) and action.help and "%(default)" not in action.help:
            return f"{action.help} (default: {' '.join(map(str, default)).replace('%', '%%')})"
        return super()._get_help_string(action)
