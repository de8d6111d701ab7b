"""Typed records, the step every record belongs to, and the registry of record kinds.

A record kind is a pydantic model registered under a name (its JSONL file's stem). The store
knows records only through this module: a new protocol (self-play, MCTS) registers its own
kinds and gets append, resume and statistics without editing the store.

Every record names the step that made it (``Record.step``, one generic key): a step is a
round and a typed phase. The store marks steps done and, on resume, keeps exactly the
records of done steps. Fields that were never set are not written (``exclude_unset``), so a
kind can have optional fields (a draft's memories, a revision's rating) and still round-trip
byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, order=True)
class Phase:
    """A protocol's phase: a family (what the manifest groups by) and an optional version."""

    family: str
    version: int | None = None

    def __str__(self) -> str:
        return self.family if self.version is None else f"{self.family}-{self.version}"


@dataclass(frozen=True, order=True)
class Step:
    """A unit of progress: one phase of one round. Its ``key`` is what markers and records share."""

    round: int
    phase: Phase

    @property
    def key(self) -> str:
        return step_key(self.round, str(self.phase))


def step_key(round_index: int, phase: str) -> str:
    return f"{round_index}/{phase}"


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str

    @property
    def step(self) -> str:
        raise NotImplementedError

    @property
    def failed(self) -> bool:
        """Whether this record reports a failure (a rating that could not be read)."""
        return False

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_unset=True), ensure_ascii=False, sort_keys=True)


class RoundRecord(Record):
    """A record made in one phase of one round (every Back-Scatter kind)."""

    round: int
    phase: str  # str(Phase), as written

    @property
    def step(self) -> str:
        return step_key(self.round, self.phase)


_KINDS: dict[str, type[Record]] = {}


def register_kind(name: str, model: type[Record]) -> type[Record]:
    """Register a record kind; its records live in ``<name>.jsonl``. Idempotent per model."""
    if _KINDS.get(name, model) is not model:
        raise ValueError(f"record kind '{name}' is already registered to {_KINDS[name].__name__}")
    _KINDS[name] = model
    return model


def kinds() -> dict[str, type[Record]]:
    """The registered kinds, in registration order."""
    return dict(_KINDS)


def kind_of(record: Record) -> str:
    for name, model in _KINDS.items():
        if type(record) is model:
            return name
    raise KeyError(f"{type(record).__name__} is not a registered record kind")
