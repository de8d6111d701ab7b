"""The run directory: one manifest, and per world an append-only JSONL file per record kind.

Layout::

    DIR/manifest.json                 the run: identity, scenarios, worlds, statistics
    DIR/worlds/<world>/<kind>.jsonl   records of each registered kind (sandbox.records)
    DIR/worlds/<world>/progress.jsonl one marker per completed step
    DIR/export/                       training files (sandbox.export)

Durability model: a step appends its records with one write + fsync per kind file, then
appends its marker to ``progress.jsonl``. A run killed at any moment leaves at worst a torn
last line (dropped on read) or records of a step with no marker; opening for resume drops
both by rewriting the file atomically (agents.files), so the step reruns and nothing is
duplicated. Completed steps are never rewritten. This holds for every registered kind with no
per-kind code: a record says which step made it (``Record.step``).

One process writes a world at a time: a writer holds an exclusive ``flock`` on the world's
``.lock`` until it finishes, so a resumed run cannot race a worker of the killed one that is
still dying (the lock goes with the process).

Statistics (counts and failures per kind) are kept as records are appended; the records of a
world are read once, when it opens.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections import defaultdict
from pathlib import Path

from pydantic import ValidationError

from agents.bounded import BoundedInputError, parse_json_line, read_json_file
from agents.files import write_atomic
from sandbox.errors import RunError
from sandbox.records import Record, Step, kind_of, kinds

PROGRESS = "progress"
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
WORLDS = "worlds"
LOCK = ".lock"
LOCK_WAIT_SECONDS = 30.0


def _read_jsonl(path: Path) -> tuple[list[dict], bool]:
    """Rows of a JSONL file and whether a torn (unterminated or unparseable) tail was dropped."""
    if not path.exists():
        return [], False
    lines = path.read_bytes().split(b"\n")
    torn = lines[-1] != b""  # the last line has no newline: a write was cut
    lines.pop()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(parse_json_line(line, f"{path}:{number}"))
        except BoundedInputError as error:
            if number == len(lines):
                torn = True
                break
            raise RunError(f"{error} (a corrupt record in the middle of the file)") from None
    return rows, torn


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _lock(root: Path):
    """Hold ``root``'s writer lock, waiting a little for a dying writer to let go."""
    handle = (root / LOCK).open("a")
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RunError(f"{root}: another process is writing this world; stop it first") from None
            time.sleep(0.2)


class WorldStore:
    """One world's records: replay of done steps, append of new ones, running counts."""

    def __init__(self, root: Path, repair: bool) -> None:
        self.root = root
        self._lock = _lock(root) if repair else None
        markers, torn = _read_jsonl(self._path(PROGRESS))
        if torn and repair:
            write_atomic(self._path(PROGRESS), jsonl(markers))
        self.done: set[str] = {m["step"] for m in markers}
        self._records: dict[str, list[Record]] = {}
        self._by_step: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
        self.failures: dict[str, int] = {}
        for kind, model in kinds().items():
            rows, torn = _read_jsonl(self._path(kind))
            parsed = [self._parse(model, kind, number, row) for number, row in enumerate(rows, start=1)]
            kept = [r for r in parsed if r.step in self.done]
            if repair and (torn or len(kept) != len(parsed)):
                write_atomic(self._path(kind), "".join(r.to_json() + "\n" for r in kept))
            self._records[kind] = kept
            self.failures[kind] = sum(r.failed for r in kept)
            for record in kept:
                self._by_step[record.step][kind].append(record)

    def _path(self, kind: str) -> Path:
        return self.root / f"{kind}.jsonl"

    def release(self) -> None:
        """Let another process write this world (a writer calls this when its run ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _parse(self, model: type[Record], kind: str, number: int, row: dict) -> Record:
        try:
            return model.model_validate(row)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(record)"
            raise RunError(f"{self._path(kind)}:{number}: {field}: {first['msg']}") from None

    # -- steps ---------------------------------------------------------------------------

    def is_done(self, step: Step) -> bool:
        return step.key in self.done

    def replay(self, step: Step) -> list[Record]:
        """The records a done step made, kind by kind in registration order."""
        made = self._by_step.get(step.key, {})
        return [record for kind in kinds() for record in made.get(kind, [])]

    def commit(self, step: Step, records: list[Record]) -> None:
        """Append a step's records (one fsync'd write per kind), then its marker."""
        by_kind: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            if record.step != step.key:
                raise ValueError(f"record {record.id} belongs to step {record.step}, not {step.key}")
            by_kind[kind_of(record)].append(record)
        for kind, batch in by_kind.items():
            _append(self._path(kind), "".join(r.to_json() + "\n" for r in batch))
            self._records.setdefault(kind, []).extend(batch)
            self._by_step[step.key][kind].extend(batch)
            self.failures[kind] = self.failures.get(kind, 0) + sum(r.failed for r in batch)
        counts = {kind: len(batch) for kind, batch in by_kind.items()}
        _append(self._path(PROGRESS), json.dumps({"step": step.key, "records": counts}, sort_keys=True) + "\n")
        self.done.add(step.key)

    # -- reading -------------------------------------------------------------------------

    def records(self, kind: str) -> list:
        return list(self._records.get(kind, []))

    def counts(self) -> dict[str, int]:
        """Records per kind this world has (kinds of protocols it does not run are left out)."""
        return {kind: len(records) for kind, records in self._records.items() if records}

    def failure_rates(self) -> dict[str, float]:
        return {kind: round(self.failures[kind] / len(records), 4)
                for kind, records in self._records.items() if records}


class RunStore:
    """A run directory: its manifest and its worlds' stores."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | Path, identity: dict, resume: bool) -> RunStore:
        """Open ``root`` for a run with this identity (scenarios, seeds, worlds, models).

        A directory holding a different run is refused; one holding the same run needs
        ``resume``. Worlds open (and drop incomplete steps) through ``world``.
        """
        store = cls(Path(root))
        manifest = store.manifest()
        if manifest is not None:
            if manifest.get("identity") != identity:
                raise RunError(
                    f"{store.root}: holds a different run (scenarios {manifest.get('scenarios', '?')}, "
                    f"seed {manifest.get('identity', {}).get('seed')}); choose another --out"
                )
            if not resume and any(store.world_dir(w).joinpath(f"{PROGRESS}.jsonl").exists()
                                  for w in manifest.get("worlds", {})):
                raise RunError(f"{store.root}: already holds this run; pass --resume to continue it")
        elif store.root.exists() and any(store.root.iterdir()):
            raise RunError(f"{store.root}: is not empty and holds no socialign run; choose another --out")
        store.root.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def existing(cls, root: str | Path) -> RunStore:
        """A finished or partial run to read (export, inspect)."""
        store = cls(Path(root))
        if store.manifest() is None:
            raise RunError(f"{store.root}: not a socialign run directory (no {MANIFEST})")
        return store

    def world_dir(self, name: str) -> Path:
        return self.root / WORLDS / name

    def world(self, name: str, repair: bool = True) -> WorldStore:
        """A world's store; ``repair`` drops torn lines and records of unmarked steps (resume)."""
        if repair:
            self.world_dir(name).mkdir(parents=True, exist_ok=True)
        return WorldStore(self.world_dir(name), repair)

    def read_worlds(self) -> dict[str, WorldStore]:
        """Every world of the manifest, read without changing anything on disk."""
        return {name: self.world(name, repair=False) for name in self.manifest().get("worlds", {})}

    def manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = read_json_file(path, MAX_MANIFEST_BYTES)
        except BoundedInputError as error:
            raise RunError(f"corrupt manifest: {error}") from None
        if not isinstance(manifest, dict):
            raise RunError(f"{path}: corrupt manifest (not a JSON object)")
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        write_atomic(self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
