"""Producers and the scheduler: whoever needs the model asks; only the scheduler calls it.

A producer is a Python generator. It ``yield``s a list of ops (``Generate``, ``Score``,
``NextToken``) and receives the list of their results, in the same order; its ``return``
value is its result. Producers compose with ``yield from``: a world's round is a producer
made of phase producers, a rating is a producer inside a phase.

The scheduler advances every live producer in lockstep. Each step it gathers the ops all
producers are waiting on, groups them by (backend, op kind, the arguments one backend call
must share), and makes ONE backend call per group; the backend may still split a call by its
token budget. This is what lets several worlds, trees or groups share a batched call (the
shape of vLLM's scheduler: the requester never calls the model). A producer that yields an
empty list waits one step, which keeps worlds with the same configuration in phase when one
of them has nothing to do.

Per step the cost is linear in the number of ops. The scheduler counts calls, requests,
generated tokens and seconds per (phase, model); ops are labelled with their phase by
``labelled``. A call that serves ops of several phases counts once for each, and its seconds
are split between them in proportion to their requests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate, pairwise
from typing import Any, TypeVar

from agents.backends import Backend, Completion, GenerationRequest, Message

R = TypeVar("R")
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Generate:
    """Sample ``request.n`` completions; the result is the list of all of them."""

    backend: Backend
    request: GenerationRequest
    phase: str = UNLABELLED

    def group(self) -> Hashable:
        return ("generate",)


@dataclass(frozen=True)
class Score:
    """Per-token log-probs of ``continuation`` after ``messages`` (+ assistant ``prefix``)."""

    backend: Backend
    messages: tuple[Message, ...]
    continuation: str
    prefix: str = ""
    end_of_turn: bool = True
    phase: str = UNLABELLED

    def group(self) -> Hashable:
        return ("score", self.end_of_turn)


@dataclass(frozen=True)
class NextToken:
    """Log-probs of each candidate as the next token after ``messages`` (+ ``prefix``)."""

    backend: Backend
    messages: tuple[Message, ...]
    candidates: tuple[str, ...]
    prefix: str = ""
    phase: str = UNLABELLED

    def group(self) -> Hashable:
        return ("next_token", self.candidates, self.prefix)


@dataclass(frozen=True)
class Embed:
    """L2-normalised embeddings of ``texts`` from ``backend`` (an encoder: ``encode(texts)``).

    Embeds of one step share one encoder pass, as generations share one model call: the
    verifiable judges of every world embed their answers together.
    """

    backend: Any
    texts: tuple[str, ...]
    phase: str = UNLABELLED

    def group(self) -> Hashable:
        return ("embed",)


Op = Generate | Score | NextToken | Embed
Producer = Generator[list[Op], list[Any], R]


def _call(backend: Backend, ops: list[Op], progress=None) -> list[Any]:
    """One backend call for ops that share a group (same backend, kind and shared arguments);
    ``progress``, a bar the hf backend advances once per decoding step of a generate call."""
    first = ops[0]
    if isinstance(first, Embed):
        vectors = backend.encode([text for op in ops for text in op.texts])
        bounds = list(accumulate((len(op.texts) for op in ops), initial=0))
        return [vectors[start:end] for start, end in pairwise(bounds)]
    if isinstance(first, Generate):
        shown = progress is not None and backend.steps_progress
        return backend.generate([op.request for op in ops], **({"progress": progress} if shown else {}))
    if isinstance(first, Score):
        return backend.score([list(op.messages) for op in ops], [op.continuation for op in ops],
                             [op.prefix for op in ops], end_of_turn=first.end_of_turn)
    return backend.next_token_logprobs([list(op.messages) for op in ops], list(first.candidates), first.prefix)


def labelled(phase: str, producer: Producer[R]) -> Producer[R]:
    """Run ``producer``, labelling its still-unlabelled ops with ``phase`` (for the statistics)."""
    results: list[Any] | None = None
    while True:
        try:
            ops = producer.send(results)
        except StopIteration as stop:
            return stop.value
        results = yield [op if op.phase != UNLABELLED else replace(op, phase=phase) for op in ops]


def gather(producers: Sequence[Producer[Any]]) -> Producer[list[Any]]:
    """Run several producers as one, each step merging their ops; returns their results in order.

    The scheduler does the same across its top-level producers; ``gather`` lets one protocol
    (an evaluation, say) fan out into independent parts whose requests still share calls.
    """
    pending = {i: p for i, p in enumerate(producers)}
    results: list[Any] = [None] * len(producers)
    incoming: dict[int, list[Any] | None] = {i: None for i in pending}
    while pending:
        asked: dict[int, list[Op]] = {}
        for i, producer in list(pending.items()):
            try:
                asked[i] = producer.send(incoming[i])
            except StopIteration as stop:
                results[i] = stop.value
                del pending[i]
        if not pending:
            break
        flat = [op for ops in asked.values() for op in ops]
        answers = yield flat
        position = 0
        for i, ops in asked.items():
            incoming[i] = answers[position : position + len(ops)]
            position += len(ops)
    return results


@dataclass
class CallStats:
    calls: int = 0
    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "requests": self.requests, "tokens": self.tokens,
                "seconds": round(self.seconds, 3)}


@dataclass
class Scheduler:
    """Runs producers to completion, one backend call per (backend, op group) per step."""

    stats: dict[tuple[str, str], CallStats] = field(default_factory=lambda: defaultdict(CallStats))
    steps: int = 0
    progress: Any = None  # a progress bar that generate calls advance per decoding step (hf backend)

    def run(self, producers: Sequence[Producer[Any]], after_step: Callable[[], None] | None = None) -> list[Any]:
        """Advance every producer until it returns; their return values, in order."""
        live = gather(producers)
        answers: list[Any] | None = None
        while True:
            try:
                ops = live.send(answers)
            except StopIteration as stop:
                return stop.value
            answers = self._step(ops)
            self.steps += 1
            if after_step is not None:
                after_step()

    def _step(self, ops: list[Op]) -> list[Any]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for position, op in enumerate(ops):
            groups[(id(op.backend), *op.group())].append(position)
        answers: list[Any] = [None] * len(ops)
        for positions in groups.values():
            batch = [ops[p] for p in positions]
            started = time.perf_counter()
            results = _call(batch[0].backend, batch, self.progress)
            self._count(batch, results, time.perf_counter() - started)
            for position, result in zip(positions, results, strict=True):
                answers[position] = result
        return answers

    def _count(self, batch: list[Op], results: list[Any], seconds: float) -> None:
        backend = batch[0].backend
        model = getattr(backend, "model_name", None) or getattr(backend, "name", type(backend).__name__)
        by_phase: dict[str, list[int]] = defaultdict(list)
        for index, op in enumerate(batch):
            by_phase[op.phase].append(index)
        for phase, indexes in by_phase.items():
            entry = self.stats[(phase, model)]
            entry.calls += 1
            entry.requests += len(indexes)
            entry.seconds += seconds * len(indexes) / len(batch)
            if isinstance(batch[0], Generate):
                entry.tokens += sum(c.num_tokens for i in indexes for c in results[i])

    def phase_table(self) -> dict[str, dict[str, dict]]:
        """phase -> model -> {calls, requests, tokens, seconds}: what the manifest reports."""
        table: dict[str, dict[str, dict]] = defaultdict(dict)
        for (phase, model), entry in sorted(self.stats.items()):
            table[phase][model] = entry.as_dict()
        return dict(table)


def sampled(backend: Backend, requests: Sequence[GenerationRequest], progress=None) -> list[list[Completion]]:
    """Every request's completions, through the scheduler in one batched call: how code outside a
    simulation (the trainers' sampling, evaluation) asks a model, as a simulation does."""
    def producer() -> Producer[list[list[Completion]]]:
        return (yield [Generate(backend, request) for request in requests])

    return Scheduler(progress=progress).run([producer()])[0]


def immediate(value: R) -> Producer[R]:
    """A producer that needs no model: it returns ``value`` without yielding."""
    return value
    yield  # unreachable: makes this function a generator


def first_completion(completions: list[Completion]) -> Completion:
    """The one completion of an ``n=1`` request (named so the n=1 assumption is visible)."""
    (completion,) = completions
    return completion
