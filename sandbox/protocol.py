"""What a protocol declares, in one place: the only way the run driver, the exporter and the
report know protocols.

A protocol runs a world's rounds (or, like self-play, a phase inside another protocol's rounds),
says how many stored steps a round makes, which record kinds it writes (each registered with
``sandbox.records.register_kind``), the export rows it yields per world and its section of the
run report. A new protocol is one module that builds a ``Protocol`` and passes it to
``register``; the built-in ones are listed in ``sandbox.protocols``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agents.engine import Producer
from sandbox.records import Phase, kinds
from sandbox.store import WorldStore
from scenarios import Scenario

if TYPE_CHECKING:
    from sandbox.context import RunContext
    from sandbox.report_html import Report

ROUND_END = Phase("memory")  # the marker that closes every round (Back-Scatter's memory phase named it)


def no_rows(store: WorldStore) -> dict[str, list[dict]]:
    return {}


@dataclass(frozen=True)
class Protocol:
    name: str
    # A world of this scenario runs this protocol's rounds; None: any scenario no other protocol claims.
    claims: Callable[[Scenario], bool] | None
    # All rounds of one world (the last step of each: ROUND_END); None: a phase inside another's rounds.
    rounds: Callable[[RunContext, int], Producer[None]] | None
    phases_per_round: Callable[[Scenario], int]  # stored steps a round makes (a progress bar's total)
    record_kinds: tuple[str, ...]
    export: Callable[[WorldStore], dict[str, list[dict]]] = no_rows  # one world's rows per export file
    report: Callable[[Report, Path], None] | None = None  # adds its section, reading the run directory


_ADDED: list[Protocol] = []


def register(protocol: Protocol) -> Protocol:
    """Add a protocol to the built-in ones (a test's toy protocol, a user's own); the record kinds it
    declares must be registered already, or the store could not read them back on resume."""
    unknown = [kind for kind in protocol.record_kinds if kind not in kinds()]
    if unknown:
        raise ValueError(f"protocol '{protocol.name}': record kind '{unknown[0]}' is not registered "
                         "(sandbox.records.register_kind)")
    _ADDED.append(protocol)
    return protocol


def added() -> list[Protocol]:
    return list(_ADDED)


def unregister(protocol: Protocol) -> None:
    _ADDED.remove(protocol)
