"""Append-only JSONL records per kind, phase markers and the run manifest.

Durability model: a phase appends all its records in one write + fsync per file, then
appends a marker to ``progress.jsonl``. A run killed at any moment leaves at worst a torn
last line (dropped on read) or records of a phase with no marker; ``open`` for resume drops
both by rewriting the file atomically (temp file + rename), so the phase reruns and nothing
is duplicated. Completed phases are never rewritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sandbox.errors import RunError

RECORD_KINDS = ("answers", "ratings", "scores")
PROGRESS = "progress"
MANIFEST = "manifest.json"


def _read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """Records of a JSONL file and whether a torn (unterminated or unparseable) tail was dropped."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    records, torn = [], False
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        torn = True  # the last line has no newline: a write was cut
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                torn = True
                break
            raise RunError(f"{path}:{number}: corrupt record (not JSON) in the middle of the file") from None
    return records, torn


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, identity: dict, resume: bool) -> RunStore:
        """Open ``root`` for a run with this identity (scenario hash, seed, models).

        A directory holding a different run is refused; one holding the same run needs
        ``resume``. Incomplete phases are dropped so that they rerun cleanly.
        """
        store = cls(Path(root))
        manifest = store.manifest()
        if manifest is not None:
            if manifest.get("identity") != identity:
                raise RunError(
                    f"{store.root}: holds a different run (scenario '{manifest.get('scenario', '?')}', "
                    f"seed {manifest.get('identity', {}).get('seed')}); choose another --out"
                )
            if not resume and store.done_phases():
                raise RunError(f"{store.root}: already holds this run; pass --resume to continue it")
        elif store.root.exists() and any(store.root.iterdir()):
            raise RunError(f"{store.root}: is not empty and holds no socialign run; choose another --out")
        store.root.mkdir(parents=True, exist_ok=True)
        store._drop_incomplete()
        return store

    @classmethod
    def existing(cls, root: str | Path) -> RunStore:
        """A finished or partial run to read (export, inspect)."""
        store = cls(Path(root))
        if store.manifest() is None:
            raise RunError(f"{store.root}: not a socialign run directory (no {MANIFEST})")
        return store

    def _drop_incomplete(self) -> None:
        done = self.done_phases()
        progress, torn = _read_jsonl(self._path(PROGRESS))
        if torn:
            write_atomic(self._path(PROGRESS), jsonl(progress))
        for kind in RECORD_KINDS:
            records, torn = _read_jsonl(self._path(kind))
            kept = [r for r in records if (r["round"], r["phase"]) in done]
            if torn or len(kept) != len(records):
                write_atomic(self._path(kind), jsonl(kept))

    # -- records -------------------------------------------------------------------------

    def _path(self, kind: str) -> Path:
        return self.root / f"{kind}.jsonl"

    def read(self, kind: str) -> list[dict]:
        records, _ = _read_jsonl(self._path(kind))
        if kind in RECORD_KINDS:
            done = self.done_phases()
            records = [r for r in records if (r["round"], r["phase"]) in done]
        return records

    def append(self, kind: str, records: list[dict]) -> None:
        if not records:
            return
        with self._path(kind).open("a", encoding="utf-8") as handle:
            handle.write(jsonl(records))
            handle.flush()
            os.fsync(handle.fileno())

    def mark_done(self, round_index: int, phase: str, **stats) -> None:
        self.append(PROGRESS, [{"round": round_index, "phase": phase, **stats}])

    def progress(self) -> list[dict]:
        return _read_jsonl(self._path(PROGRESS))[0]

    def done_phases(self) -> set[tuple[int, str]]:
        return {(p["round"], p["phase"]) for p in self.progress()}

    # -- manifest ------------------------------------------------------------------------

    def manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise RunError(f"{path}: corrupt manifest (not JSON)") from None

    def write_manifest(self, manifest: dict) -> None:
        write_atomic(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
