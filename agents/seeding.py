"""The one place seeds are derived: a stable hash of named parts, never arithmetic on seeds.

``seed + sample`` collides across requests (request 1's second sample is request 2's first);
hashing the parts cannot, for any practical number of records. Every seed in a run comes from
``derive_seed(run seed, record id, ...)`` and every sample of a request from ``sample_seed``.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 31  # fits every consumer: torch generators, numpy, the OpenAI API's int seed


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (run seed, record id, phase, agent, attempt, ...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << SEED_BITS) - 1)


def sample_seed(request_seed: int | None, sample: int) -> int | None:
    """The seed of sample ``sample`` of a request seeded ``request_seed`` (None stays unseeded)."""
    return None if request_seed is None else derive_seed(request_seed, "sample", sample)
