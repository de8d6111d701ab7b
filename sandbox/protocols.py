"""The protocols a run knows: the built-in ones, in the order the report shows their sections,
then any registered (sandbox.protocol.register)."""

from __future__ import annotations

from sandbox.backscatter import BACK_SCATTER
from sandbox.mcts_phase import MCTS
from sandbox.protocol import Protocol, added
from sandbox.selfplay_phase import SELF_PLAY
from scenarios import Scenario


def all_protocols() -> list[Protocol]:
    return [BACK_SCATTER, SELF_PLAY, MCTS, *added()]


def protocol_of(scenario: Scenario) -> Protocol:
    """The protocol whose rounds a world of ``scenario`` runs: the one that claims it, else the default."""
    runners = [p for p in all_protocols() if p.rounds is not None]
    claimed = [p for p in runners if p.claims is not None and p.claims(scenario)]
    return claimed[0] if claimed else next(p for p in runners if p.claims is None)
