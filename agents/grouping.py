"""Batch by key: one call per distinct key (a backend, a rating scale, a memory namespace),
results back in the original order. This is how a phase mixing several models or scales still
makes one batched call per model or scale."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")


def positions_by(keys: Sequence[K]) -> dict[K, list[int]]:
    """The positions holding each distinct key, keys in first-seen order."""
    positions: dict[K, list[int]] = defaultdict(list)
    for position, key in enumerate(keys):
        positions[key].append(position)
    return dict(positions)


def call_grouped(keys: Sequence[K], values: Sequence[V], call: Callable[[K, list[V]], Sequence[R]]) -> list[R]:
    """``call(key, its values)`` once per distinct key; result i belongs to values[i]."""
    results: list = [None] * len(values)
    for key, positions in positions_by(keys).items():
        for position, result in zip(positions, call(key, [values[p] for p in positions]), strict=True):
            results[position] = result
    return results
