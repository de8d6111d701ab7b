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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from agents.backends import Backend, BackendPool
from agents.engine import Scheduler
from agents.memory import EmbeddingMemory, Encoder, MemoryItem
from agents.registry import check_model
from agents.seeding import derive_seed
from formats.manifest import Manifest
from sandbox.context import RunContext
from sandbox.errors import RunError
from sandbox.protocol import ROUND_END
from sandbox.protocols import protocol_of
from sandbox.records import Step
from sandbox.store import RunStore, WorldStore
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


def run_identity(specs: Sequence[WorldSpec]) -> dict:
    """What makes two runs the same run (a directory refuses a different one)."""
    models = models_of(specs)
    for ref in models:
        if ref.backend != "openai":
            check_model(ref.name)
    return {
        "worlds": [{"name": s.name, "scenario_sha256": s.loaded.sha256, "seed": s.seed} for s in specs],
        "models": [ref.model_dump(mode="json") for ref in models],
    }


def phases_per_round(spec: WorldSpec) -> int:
    """Stored steps a round makes (for the progress bar; a search that ends early makes fewer)."""
    scenario = spec.loaded.scenario
    return protocol_of(scenario).phases_per_round(scenario)


def world_entry(spec: WorldSpec, store: WorldStore, rounds: int, memory: EmbeddingMemory | None = None) -> dict:
    """A world's entry in the manifest (``failures`` is summed into the run's rates, then dropped)."""
    counts = store.counts()
    described = {} if memory is None else {"memory": {"items": len(memory), "index_kinds": memory.index_kinds(),
                                                      "flat_limit": memory.flat_limit}}
    return {**described,
        "scenario": spec.loaded.scenario.name, "replica": spec.replica, "seed": spec.seed,
        "rounds_requested": rounds, "rounds_completed": sum(store.is_done(Step(r, ROUND_END)) for r in range(rounds)),
        "counts": counts, "failures": {kind: store.failures.get(kind, 0) for kind in counts},
        "failure_rate": store.failure_rates(),
    }


class Shard:
    """Some worlds of a run under one scheduler, writing their own stores and no manifest.

    The local driver holds one shard with every world; under Ray each actor holds one
    (sandbox.distributed), and the driver alone writes the manifest from what shards report.
    """

    def __init__(self, specs: Sequence[WorldSpec], worlds: dict[str, World], store: RunStore,
                 rounds: dict[str, int], pool: BackendPool | None = None, encoder: Encoder | None = None) -> None:
        self.specs = list(specs)
        self.rounds = rounds
        self.store = store
        self.pool = pool or BackendPool()
        self.encoders: dict[str, Encoder] = {}
        self.default_encoder = encoder
        self.scheduler = Scheduler()
        self.on_commit: Callable[[Step], None] = lambda step: None
        self.contexts = [self._context(spec, worlds[spec.name]) for spec in self.specs]

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
                          self.backend, lambda step: self.on_commit(step))

    def steps_left(self) -> int:
        return max(sum(phases_per_round(spec) * self.rounds[spec.name] - len(ctx.store.done)
                       for spec, ctx in zip(self.specs, self.contexts)), 0)

    def run(self, after_step: Callable[[], None] | None = None) -> None:
        try:
            self.scheduler.run([protocol_of(ctx.scenario).rounds(ctx, self.rounds[ctx.world_id]) for ctx in self.contexts],
                               after_step=after_step)
        finally:
            for ctx in self.contexts:
                ctx.store.release()

    def worlds(self) -> dict[str, dict]:
        """The manifest's entry of each world of this shard."""
        return {spec.name: world_entry(spec, ctx.store, self.rounds[spec.name], ctx.memory)
                for ctx, spec in zip(self.contexts, self.specs)}

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.store.release()
        self.pool.close()


class RunManifest:
    """The run's one manifest.json: identity and scenarios, plus what the shards report."""

    def __init__(self, specs: Sequence[WorldSpec], store: RunStore, identity: dict) -> None:
        self.store = store
        self.identity = identity
        self.scenarios = {s.loaded.scenario.name: s.loaded for s in specs}
        self.run_id = "+".join(self.scenarios)
        # What export judges against (expected, reference), kept with the run: the bank may change later.
        self._questions = {name: [q.model_dump(mode="json", exclude_none=True) for q in loaded.train_questions]
                           for name, loaded in self.scenarios.items()}
        previous = store.manifest() or {}
        self._previous_phases = previous.get("phases", {})
        self._created = previous.get("created") or dt.datetime.now(dt.UTC).isoformat()
        self._wall_before = previous.get("wall_seconds", 0.0)
        self._versions = package_versions()
        self._started = time.perf_counter()

    def write(self, status: str, worlds: dict[str, dict], phases: dict, **extra) -> dict:
        """Write the manifest from each world's entry and this session's phase table."""
        counts: dict[str, int] = {}
        failures: dict[str, int] = {}
        for entry in worlds.values():
            for kind, count in entry["counts"].items():
                counts[kind] = counts.get(kind, 0) + count
                failures[kind] = failures.get(kind, 0) + entry["failures"][kind]
        worlds = {name: {k: v for k, v in entry.items() if k != "failures"} for name, entry in worlds.items()}
        phases = add_phase_tables(self._previous_phases, phases)
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
            "wall_seconds": round(self._wall_before + time.perf_counter() - self._started, 3),
            "rounds_requested": sum(w["rounds_requested"] for w in worlds.values()),
            "rounds_completed": sum(w["rounds_completed"] for w in worlds.values()),
            "counts": counts,
            "failure_rate": {k: round(failures[k] / n, 4) if n else 0.0 for k, n in counts.items()},
            "phases": phases,
            "tokens_generated": tokens,
            "tokens_per_second": round(tokens / seconds, 2) if seconds else 0.0,
            **extra,
        }
        Manifest.model_validate(manifest)  # what its readers will read (formats.manifest)
        self.store.write_manifest(manifest)
        return manifest


def build_worlds(specs: Sequence[WorldSpec]) -> dict[str, World]:
    return {spec.name: World(spec.loaded, spec.seed) for spec in specs}


def requested_rounds(specs: Sequence[WorldSpec], rounds: int | None) -> dict[str, int]:
    return {spec.name: rounds or spec.loaded.scenario.rounds for spec in specs}


class Simulation:
    """Every world in this process: one shard, the manifest rewritten after each step that commits."""

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
        built = build_worlds(self.specs)  # a bad graph is refused before the directory is touched
        identity = run_identity(self.specs)
        self.store = RunStore.open(out, identity, resume)
        self.shard = Shard(self.specs, built, self.store, requested_rounds(self.specs, rounds), pool, encoder)
        self.shard.on_commit = self._committed
        self.pool = self.shard.pool
        self.manifest = RunManifest(self.specs, self.store, identity)
        self.show_progress = show_progress
        self._bar: tqdm | None = None
        self._dirty = False
        self._write_manifest(status="running")

    @property
    def scheduler(self) -> Scheduler:
        return self.shard.scheduler

    def world(self, name: str) -> RunContext:
        return next(ctx for ctx in self.shard.contexts if ctx.world_id == name)

    def backend(self, ref: ModelRef) -> Backend:
        return self.shard.backend(ref)

    def _committed(self, step: Step) -> None:
        self._dirty = True
        if self._bar is not None:
            self._bar.update(1)

    def _after_step(self) -> None:
        if self._dirty:
            self._write_manifest(status="running")
            self._dirty = False

    def run(self) -> dict:
        with tqdm(total=self.shard.steps_left(), disable=not self.show_progress, unit="phase",
                  dynamic_ncols=True) as bar:
            self._bar = bar
            self.shard.run(after_step=self._after_step)
            self._bar = None
        return self._write_manifest(status="complete")

    def close(self) -> None:
        self.shard.close()

    def _write_manifest(self, status: str) -> dict:
        return self.manifest.write(status, self.shard.worlds(), self.shard.scheduler.phase_table())
