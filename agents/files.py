"""The one atomic writer: a file is replaced whole or not at all, even on a crash or kill -9.

Every package writes through this (run manifests, rewritten record files, export files,
training configs and metrics, memory indexes), so there is one durability rule to reason
about: write a temp file beside the target, fsync it, rename it over the target.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsync'd and renamed over ``path``."""
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    try:
        yield staging
        with staging.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> None:
    with replacing(path) as staging:
        staging.write_text(text, encoding="utf-8")
