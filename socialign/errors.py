"""Errors the command line reports as one line with exit code 2 (bad input, never a traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message names the file, the field and what was expected."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every package's bad-input error, gathered here so each package stays import-free of the CLI."""
    from agents.backends import BackendUnavailable
    from agents.bounded import BoundedInputError
    from agents.registry import ModelNotAvailable

    types: list[type[BaseException]] = [UserError, ModelNotAvailable, BackendUnavailable, BoundedInputError]
    for module, name in (
        ("scenarios.errors", "ScenarioError"),
        ("sandbox.errors", "RunError"),
        ("align.errors", "DataError"),
    ):
        try:
            types.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)
