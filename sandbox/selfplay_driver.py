"""A stand-in for ``sandbox.engine`` until the engine lands: the same ops, a minimal scheduler.

The ops have the names and fields of the engine's (``Generate(backend, request)``,
``NextToken(backend, messages, candidates, prefix)``), and a producer is the same kind of
generator: it yields a list of ops, receives their results in order, and returns its result.
At merge this module goes away: ``sandbox.selfplay`` imports the ops from ``sandbox.engine``
and callers use ``Scheduler().run`` instead of ``run_producers``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agents.backends import Backend, GenerationRequest, Message

R = TypeVar("R")


@dataclass(frozen=True)
class Generate:
    """Sample ``request.n`` completions; the result is the list of all of them."""

    backend: Backend
    request: GenerationRequest

    def group(self) -> Hashable:
        return ("generate",)


@dataclass(frozen=True)
class NextToken:
    """Log-probs of each candidate as the next token after ``messages`` (+ ``prefix``)."""

    backend: Backend
    messages: tuple[Message, ...]
    candidates: tuple[str, ...]
    prefix: str = ""

    def group(self) -> Hashable:
        return ("next_token", self.candidates, self.prefix)


Op = Generate | NextToken
Producer = Generator[list[Op], list[Any], R]


def _call(ops: list[Op]) -> list[Any]:
    first = ops[0]
    if isinstance(first, Generate):
        return first.backend.generate([op.request for op in ops])
    return first.backend.next_token_logprobs([list(op.messages) for op in ops], list(first.candidates), first.prefix)


def run_producers(producers: Sequence[Producer[Any]]) -> list[Any]:
    """Run producers in lockstep: each step, ONE backend call per (backend, op kind, shared args)."""
    results: list[Any] = [None] * len(producers)
    incoming: dict[int, list[Any] | None] = dict.fromkeys(range(len(producers)))
    live = dict(enumerate(producers))
    while live:
        asked: dict[int, list[Op]] = {}
        for i, producer in list(live.items()):
            try:
                asked[i] = producer.send(incoming[i])
            except StopIteration as stop:
                results[i] = stop.value
                del live[i]
        flat = [(i, position, op) for i, ops in asked.items() for position, op in enumerate(ops)]
        groups: dict[Hashable, list[tuple[int, int, Op]]] = defaultdict(list)
        for entry in flat:
            groups[(id(entry[2].backend), *entry[2].group())].append(entry)
        incoming = {i: [None] * len(ops) for i, ops in asked.items()}
        for entries in groups.values():
            for (i, position, _), result in zip(entries, _call([op for _, _, op in entries]), strict=True):
                incoming[i][position] = result
    return results
