"""The one error `align` raises for bad user input, so the CLI can report it in one line (exit 2)."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset or output directory the user must fix; the message names the file, line and field."""
