"""Run a scenario: rounds of Back-Scatter over the world, recorded in a resumable run directory."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from agents.backends import Backend, BackendPool
from agents.memory import EmbeddingMemory, Encoder, MemoryItem
from agents.registry import check_model
from sandbox.backscatter import Assignment, Round, derive_seed, final_answers, memory_item
from sandbox.store import RECORD_KINDS, RunStore
from sandbox.world import World
from scenarios import LoadedScenario, ModelRef

PACKAGES = ("socialign", "torch", "transformers", "sentence-transformers", "faiss-cpu", "networkx", "trl")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def scenario_models(loaded: LoadedScenario) -> list[ModelRef]:
    refs = [group.model for group in loaded.scenario.agents] + [loaded.scenario.observers.model]
    unique = {ref.model_dump_json(): ref for ref in refs}
    return [unique[key] for key in sorted(unique)]


class Simulation:
    def __init__(
        self,
        loaded: LoadedScenario,
        out: str | Path,
        rounds: int | None = None,
        seed: int | None = None,
        resume: bool = False,
        pool: BackendPool | None = None,
        encoder: Encoder | None = None,
        show_progress: bool = True,
    ) -> None:
        self.loaded = loaded
        self.scenario = loaded.scenario
        self.rounds = rounds or self.scenario.rounds
        self.seed = self.scenario.seed if seed is None else seed
        self.world = World(loaded)  # validates the graph before anything is written
        models = scenario_models(loaded)
        for ref in models:
            if ref.backend != "openai":
                check_model(ref.name)
        self.identity = {
            "scenario_sha256": loaded.sha256,
            "seed": self.seed,
            "models": [ref.model_dump(mode="json") for ref in models],
        }
        self.run_id = f"{self.scenario.name}-s{self.seed}"
        self.store = RunStore.open(out, self.identity, resume)
        self.records = {kind: self.store.read(kind) for kind in RECORD_KINDS}
        self.done = self.store.done_phases()
        self.pool = pool or BackendPool()
        self.encoder = encoder or Encoder(self.scenario.memory.embedder)
        self.memory = self._rebuild_memory()
        self.show_progress = show_progress
        self._bar: tqdm | None = None
        self._started = time.perf_counter()
        self._write_manifest(status="running")

    # -- shared services for rounds --------------------------------------------------------

    def backend(self, ref: ModelRef) -> Backend:
        return self.pool.get(ref.backend, ref.name, **ref.options)

    def assign_questions(self, round_index: int) -> list[Assignment]:
        """Each round asks ``per_round`` distinct questions; agents share them round-robin.

        Questions walk through a seeded permutation of the training split, so rounds see new
        questions until the bank is used up; several agents answering the same question is
        what makes cross-agent comparisons possible.
        """
        train = list(self.loaded.train_questions)
        random.Random(derive_seed(self.seed, "questions")).shuffle(train)
        per_round = min(self.scenario.questions.per_round, len(train), len(self.world.agents))
        start = round_index * per_round
        chosen = [train[(start + i) % len(train)] for i in range(per_round)]
        agents = list(self.world.agents)
        random.Random(derive_seed(self.seed, round_index, "assign")).shuffle(agents)
        return [Assignment(agent, chosen[i % per_round].id, chosen[i % per_round].text) for i, agent in enumerate(agents)]

    def phase(self, round_index: int, name: str, kind: str | None, compute: Callable[[], list[dict]]) -> list[dict]:
        """Replay a finished phase from its records, or compute, store and mark it."""
        if (round_index, name) in self.done:
            return [r for r in self.records.get(kind, []) if r["round"] == round_index and r["phase"] == name]
        if self._bar is not None:
            self._bar.set_description(f"round {round_index + 1}/{self.rounds} {name}")
        tokens_before = self._generated_tokens()
        started = time.perf_counter()
        records = compute()
        seconds = time.perf_counter() - started
        if kind is not None:
            self.store.append(kind, records)
            self.records[kind].extend(records)
        self.store.mark_done(round_index, name, seconds=round(seconds, 3),
                             tokens=self._generated_tokens() - tokens_before, records=len(records))
        self.done.add((round_index, name))
        if self._bar is not None:
            self._bar.update(1)
        return records

    def _generated_tokens(self) -> int:
        return sum(backend.stats.generated_tokens for backend in self.pool.backends())

    def _rebuild_memory(self) -> EmbeddingMemory:
        """Seed memories plus the final answers of rounds whose memory phase completed."""
        memory = EmbeddingMemory(self.encoder)
        seeds = [
            MemoryItem(agent.id, seed.question, {"answer": seed.answer, "round": -1})
            for agent in self.world.agents
            for group in self.scenario.agents
            if group.group == agent.group
            for seed in group.seed_memories
        ]
        remembered = [
            memory_item(answer)
            for answer in final_answers(self.records["answers"])
            if (answer["round"], "memory") in self.done
        ]
        if seeds or remembered:
            memory.add(seeds + remembered)
        return memory

    # -- running ----------------------------------------------------------------------------

    def run(self) -> dict:
        pending = [r for r in range(self.rounds) if (r, "memory") not in self.done]
        phases_per_round = 2 + 2 * self.scenario.backscatter.max_revisions + 1 + 1
        with tqdm(total=len(pending) * phases_per_round, disable=not self.show_progress, unit="phase",
                  dynamic_ncols=True) as bar:
            self._bar = bar
            for round_index in pending:
                Round(self, round_index).run()
                self._write_manifest(status="running")
                bar.total = bar.n + (len(pending) - pending.index(round_index) - 1) * phases_per_round
            self._bar = None
        return self._write_manifest(status="complete")

    def close(self) -> None:
        self.pool.close()

    def _write_manifest(self, status: str) -> dict:
        previous = self.store.manifest() or {}
        manifest = {
            "run_id": self.run_id,
            "scenario": self.scenario.name,
            "scenario_path": str(self.loaded.path),
            "scenario_config": self.scenario.model_dump(mode="json"),
            "identity": self.identity,
            "status": status,
            "created": previous.get("created") or dt.datetime.now(dt.UTC).isoformat(),
            "updated": dt.datetime.now(dt.UTC).isoformat(),
            "rounds_requested": self.rounds,
            "package_versions": package_versions(),
            "wall_seconds": round(previous.get("wall_seconds", 0.0) + time.perf_counter() - self._started, 3),
            **run_statistics(self.store),
        }
        self._started = time.perf_counter()
        self.store.write_manifest(manifest)
        return manifest


def run_statistics(store: RunStore) -> dict:
    """Counts, parse-failure rates, and wall time and tokens per phase, from the records."""
    progress = store.progress()
    phases: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "tokens": 0})
    for marker in progress:
        family = marker["phase"].split("-")[0]
        phases[family]["seconds"] = round(phases[family]["seconds"] + marker.get("seconds", 0.0), 3)
        phases[family]["tokens"] += marker.get("tokens", 0)
    records = {kind: store.read(kind) for kind in RECORD_KINDS}
    ratings, scores = records["ratings"], records["scores"]
    tokens = sum(p["tokens"] for p in phases.values())
    seconds = sum(p["seconds"] for p in phases.values())
    return {
        "rounds_completed": sum(1 for m in progress if m["phase"] == "memory"),
        "counts": {kind: len(rows) for kind, rows in records.items()},
        "parse_failure_rate": {
            "peer": round(sum(not r["ok"] for r in ratings) / len(ratings), 4) if ratings else 0.0,
            "observer": round(sum(not s["ok"] for s in scores) / len(scores), 4) if scores else 0.0,
        },
        "phases": dict(phases),
        "tokens_generated": tokens,
        "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
    }
