"""Scenario errors: always one line naming the file, the field (and line) and what was expected."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario, question bank or graph file the user must fix."""
