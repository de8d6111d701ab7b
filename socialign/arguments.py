"""Argument types shared by the subcommands: argparse rejects a bad number with exit code 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(minimum: float, number: type = int) -> Callable[[str], float]:
    """An argparse ``type`` that parses ``number`` and refuses values below ``minimum``."""

    def parse(text: str):
        value = number(text)  # a ValueError becomes argparse's "invalid int value: 'x'"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = number.__name__
    return parse
