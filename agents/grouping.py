"""Group positions by key (a memory namespace, a rating scale): one batched operation per
distinct key, results put back in the original order by position."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def positions_by(keys: Sequence[K]) -> dict[K, list[int]]:
    """The positions holding each distinct key, keys in first-seen order."""
    positions: dict[K, list[int]] = defaultdict(list)
    for position, key in enumerate(keys):
        positions[key].append(position)
    return dict(positions)
