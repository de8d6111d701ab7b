"""What a protocol sees of a run: one world, its memory, its store, its seed and ids, the models.

Protocols (Back-Scatter today; self-play and MCTS later) get this narrow context instead of
the simulation, so they cannot reach into the driver, and the driver can run any number of
them side by side under one scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.backends import Backend
from agents.engine import Producer, labelled
from agents.memory import EmbeddingMemory
from agents.seeding import derive_seed
from sandbox.records import Record, Step
from sandbox.store import WorldStore
from sandbox.world import World
from scenarios import LoadedScenario, ModelRef, Scenario


@dataclass
class RunContext:
    world_id: str  # "<scenario>-r<replica>": prefixes every record id
    seed: int  # this world's seed (derived per replica from the run seed)
    loaded: LoadedScenario
    world: World
    memory: EmbeddingMemory
    store: WorldStore
    backend: Callable[[ModelRef], Backend]  # the loaded model behind a reference (shared pool)
    on_commit: Callable[[Step], None] = lambda step: None

    @property
    def scenario(self) -> Scenario:
        return self.loaded.scenario

    def seed_for(self, *parts: object) -> int:
        """A seed for anything in this world, from the world seed and named parts (a record id...)."""
        return derive_seed(self.seed, *parts)

    def record_id(self, *parts: object) -> str:
        return "/".join(str(p) for p in (self.world_id, *parts))

    def step(self, step: Step, make: Callable[[], Producer[list[Record]]]) -> Producer[list[Record]]:
        fresh = not self.store.is_done(step)
        records = yield from replay_or_run(self.store, step, make)
        if fresh:
            self.on_commit(step)
        return records


def replay_or_run(store: WorldStore, step: Step, make: Callable[[], Producer[list[Record]]]) -> Producer[list[Record]]:
    """Replay a done step from its records, or run ``make()``, then store and mark the step.

    Steps are pure functions of earlier records and seeds derived from record ids, so replaying
    done steps and rerunning the rest reaches exactly the records of an uninterrupted run,
    whatever the record kinds.
    """
    if store.is_done(step):
        return store.replay(step)
    records = yield from labelled(step.phase.family, make())
    store.commit(step, records)
    return records
