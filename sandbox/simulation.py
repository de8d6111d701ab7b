"""The driver: scenarios -> worlds -> one scheduler -> per-world stores -> one manifest.

Several worlds (a scenario's ``replicas``, or several scenarios) run in one process under one
scheduler, so each phase makes one batched call per model for all of them. Replica ``k`` of a
scenario is the world ``<scenario>-r<k>`` with seed ``derive_seed(seed, "replica", k)``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from agents.backends import Backend, BackendPool
from agents.memory import EmbeddingMemory, Encoder, MemoryItem
from agents.registry import check_model
from agents.seeding import derive_seed
from sandbox.backscatter import MEMORY, back_scatter
from sandbox.context import RunContext
from sandbox.engine import Scheduler
from sandbox.errors import RunError
from sandbox.mcts_phase import mcts_rounds
from sandbox.records import Step
from sandbox.store import RunStore
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


@dataclass(frozen=True)
class WorldSpec:
    name: str  # "<scenario>-r<replica>"
    loaded: LoadedScenario
    replica: int
    seed: int


def plan_worlds(scenarios: Sequence[LoadedScenario], seed: int | None = None,
                replicas: int | None = None) -> list[WorldSpec]:
    """The worlds of a run: each scenario's replicas (``replicas`` overrides the scenario's)."""
    names = [loaded.scenario.name for loaded in scenarios]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RunError(f"scenario '{duplicated[0]}' is given twice; use replicas to run copies of a world")
    worlds = []
    for loaded in scenarios:
        base = loaded.scenario.seed if seed is None else seed
        for replica in range(replicas or loaded.scenario.replicas):
            worlds.append(WorldSpec(f"{loaded.scenario.name}-r{replica}", loaded, replica,
                                    derive_seed(base, "replica", replica)))
    return worlds


def models_of(worlds: Sequence[WorldSpec]) -> list[ModelRef]:
    refs = [ref for w in worlds for ref in [*(g.model for g in w.loaded.scenario.agents), w.loaded.scenario.observers.model]]
    unique = {ref.model_dump_json(): ref for ref in refs}
    return [unique[key] for key in sorted(unique)]


def add_phase_tables(*tables: dict) -> dict:
    """Sum phase -> model -> counters tables (a resumed run adds to what earlier sessions did)."""
    total: dict[str, dict[str, dict]] = {}
    for table in tables:
        for phase, models in table.items():
            for model, counters in models.items():
                entry = total.setdefault(phase, {}).setdefault(model, {})
                for key, value in counters.items():
                    entry[key] = round(entry.get(key, 0) + value, 3)
    return total


def protocol(scenario):
    """What a world's rounds are: step-level search (``mcts``) or Back-Scatter (and self-play)."""
    return mcts_rounds if scenario.mcts is not None else back_scatter


def steps_per_round(scenario) -> int:
    """Stored steps a round makes (for the progress bar; a search that ends early makes fewer)."""
    if scenario.mcts is not None:
        return scenario.mcts.max_steps + 1
    return 2 + 2 * scenario.backscatter.max_revisions + 2 + (scenario.selfplay is not None)


class Simulation:
    def __init__(
        self,
        worlds: Sequence[WorldSpec],
        out: str | Path,
        rounds: int | None = None,
        resume: bool = False,
        pool: BackendPool | None = None,
        encoder: Encoder | None = None,
        show_progress: bool = True,
    ) -> None:
        self.specs = list(worlds)
        self.rounds = {spec.name: rounds or spec.loaded.scenario.rounds for spec in self.specs}
        worlds_built = {spec.name: World(spec.loaded, spec.seed) for spec in self.specs}  # validates graphs first
        models = models_of(self.specs)
        for ref in models:
            if ref.backend != "openai":
                check_model(ref.name)
        self.identity = {
            "worlds": [{"name": s.name, "scenario_sha256": s.loaded.sha256, "seed": s.seed} for s in self.specs],
            "models": [ref.model_dump(mode="json") for ref in models],
        }
        self.scenarios = {s.loaded.scenario.name: s.loaded for s in self.specs}
        # What export judges against (expected, reference), kept with the run: the bank may change later.
        self._questions = {name: [q.model_dump(mode="json", exclude_none=True) for q in loaded.train_questions]
                           for name, loaded in self.scenarios.items()}
        self.run_id = "+".join(self.scenarios)
        self.store = RunStore.open(out, self.identity, resume)
        self.pool = pool or BackendPool()
        self.encoders: dict[str, Encoder] = {}
        self.default_encoder = encoder
        self.scheduler = Scheduler()
        self.contexts = [self._context(spec, worlds_built[spec.name]) for spec in self.specs]
        self.show_progress = show_progress
        self._bar: tqdm | None = None
        self._dirty = False
        previous = self.store.manifest() or {}
        self._previous_phases = previous.get("phases", {})
        self._created = previous.get("created") or dt.datetime.now(dt.UTC).isoformat()
        self._wall_before = previous.get("wall_seconds", 0.0)
        self._versions = package_versions()
        self._started = time.perf_counter()
        self._write_manifest(status="running")

    # -- worlds ---------------------------------------------------------------------------

    def backend(self, ref: ModelRef) -> Backend:
        return self.pool.get(ref.backend, ref.name, **ref.options)

    def _encoder(self, name: str) -> Encoder:
        if name not in self.encoders:
            given = self.default_encoder
            self.encoders[name] = given if given is not None and given.name == name else Encoder(name)
        return self.encoders[name]

    def _context(self, spec: WorldSpec, world: World) -> RunContext:
        scenario = spec.loaded.scenario
        memory = EmbeddingMemory(self._encoder(scenario.memory.embedder))
        seeds = [
            MemoryItem(agent.id, seed.question, {"answer": seed.answer, "round": -1})
            for agent in world.agents
            for group in scenario.agents
            if group.group == agent.group
            for seed in group.seed_memories
        ]
        if seeds:
            memory.add(seeds)
        return RunContext(spec.name, spec.seed, spec.loaded, world, memory, self.store.world(spec.name),
                          self.backend, self._committed)

    def world(self, name: str) -> RunContext:
        return next(ctx for ctx in self.contexts if ctx.world_id == name)

    def _committed(self, step: Step) -> None:
        self._dirty = True
        if self._bar is not None:
            self._bar.update(1)

    def _after_step(self) -> None:
        if self._dirty:
            self._write_manifest(status="running")
            self._dirty = False

    # -- running ----------------------------------------------------------------------------

    def run(self) -> dict:
        total = sum(steps_per_round(spec.loaded.scenario) * self.rounds[ctx.world_id] - len(ctx.store.done)
                    for spec, ctx in zip(self.specs, self.contexts))
        with tqdm(total=max(total, 0), disable=not self.show_progress, unit="phase", dynamic_ncols=True) as bar:
            self._bar = bar
            self.scheduler.run([protocol(ctx.scenario)(ctx, self.rounds[ctx.world_id]) for ctx in self.contexts],
                               after_step=self._after_step)
            self._bar = None
        return self._write_manifest(status="complete")

    def close(self) -> None:
        self.pool.close()

    def _rounds_completed(self, ctx: RunContext) -> int:
        return sum(ctx.store.is_done(Step(r, MEMORY)) for r in range(self.rounds[ctx.world_id]))

    def _write_manifest(self, status: str) -> dict:
        now = time.perf_counter()
        worlds = {}
        for ctx, spec in zip(self.contexts, self.specs):
            worlds[ctx.world_id] = {
                "scenario": spec.loaded.scenario.name, "replica": spec.replica, "seed": spec.seed,
                "rounds_requested": self.rounds[ctx.world_id], "rounds_completed": self._rounds_completed(ctx),
                "counts": ctx.store.counts(), "failure_rate": ctx.store.failure_rates(),
            }
        counts: dict[str, int] = {}
        failures: dict[str, int] = {}
        for ctx in self.contexts:
            for kind, count in ctx.store.counts().items():
                counts[kind] = counts.get(kind, 0) + count
                failures[kind] = failures.get(kind, 0) + ctx.store.failures.get(kind, 0)
        phases = add_phase_tables(self._previous_phases, self.scheduler.phase_table())
        tokens = sum(m["tokens"] for models in phases.values() for m in models.values())
        seconds = sum(m["seconds"] for models in phases.values() for m in models.values())
        manifest = {
            "run_id": self.run_id,
            "identity": self.identity,
            "scenarios": {
                name: {"path": str(loaded.path), "sha256": loaded.sha256, "config": loaded.scenario.model_dump(mode="json"),
                       "train_questions": self._questions[name]}
                for name, loaded in self.scenarios.items()
            },
            "worlds": worlds,
            "status": status,
            "created": self._created,
            "updated": dt.datetime.now(dt.UTC).isoformat(),
            "package_versions": self._versions,
            "wall_seconds": round(self._wall_before + now - self._started, 3),
            "rounds_requested": sum(w["rounds_requested"] for w in worlds.values()),
            "rounds_completed": sum(w["rounds_completed"] for w in worlds.values()),
            "counts": counts,
            "failure_rate": {k: round(failures[k] / n, 4) if n else 0.0 for k, n in counts.items()},
            "phases": phases,
            "tokens_generated": tokens,
            "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
        }
        self.store.write_manifest(manifest)
        return manifest
