"""Run-directory errors (a different run in --out, unreadable records): one line, exit code 2."""

from __future__ import annotations


class RunError(ValueError):
    """The output or run directory cannot be used as asked."""
