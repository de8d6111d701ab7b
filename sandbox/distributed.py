"""Worlds sharded across Ray actors, each holding its own backends; one run directory, one manifest.

The driver checks the run's identity, deals the worlds round-robin to the actors and alone
writes the manifest, from what each actor reports when its worlds finish. An actor is a
``Shard`` (sandbox.simulation): its worlds share batched calls on its own backends, as all
worlds do in one process, and it writes their stores itself, so the run directory must be on a
filesystem every node sees (an actor that cannot see it refuses to start). A killed actor or
driver leaves each world's store as a killed local run does, and ``--resume`` continues it
(the manifest's call and token counters then cover only shards that finished; records are exact).
Ray is an optional extra (``pip install 'socialign[ray]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from sandbox.errors import RunError
from sandbox.simulation import (
    RunManifest,
    Shard,
    WorldSpec,
    add_phase_tables,
    build_worlds,
    phases_per_round,
    requested_rounds,
    run_identity,
    world_entry,
)
from sandbox.store import PROGRESS, RunStore

POLL_SECONDS = 1.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunError("--ray needs Ray: pip install 'socialign[ray]'") from None
    return ray


class ShardActor:
    """What one Ray actor runs: a shard of the run's worlds, writing into the shared run directory."""

    def start(self, specs: list[WorldSpec], out: str, rounds: dict[str, int], run_id: str) -> dict:
        store = RunStore(Path(out))
        manifest = store.manifest()
        if manifest is None or manifest.get("run_id") != run_id:
            raise RunError(f"{out}: this Ray worker does not see the run directory; "
                           "--out must be on a filesystem every node shares")
        self.shard = Shard(specs, build_worlds(specs), store, rounds)
        import ray

        return {"node": ray.util.get_node_ip_address(), "pid": os.getpid(), "worlds": [s.name for s in specs]}

    def run(self) -> dict:
        self.shard.run()
        return {"worlds": self.shard.worlds(), "phases": self.shard.scheduler.phase_table()}


class RaySimulation:
    """The driver of a run whose worlds are sharded across ``workers`` Ray actors.

    ``address`` joins a running cluster; without it a local Ray starts with ``num_cpus``
    (default: this machine's cores) and stops when the run closes. An already-initialised Ray
    (a test's shared cluster) is used as it is.
    """

    def __init__(self, worlds: Sequence[WorldSpec], out: str | Path, rounds: int | None = None,
                 resume: bool = False, address: str | None = None, workers: int | None = None,
                 worker_gpus: float = 0.0, num_cpus: int | None = None, show_progress: bool = True) -> None:
        self.ray = ray = import_ray()
        self.specs = list(worlds)
        build_worlds(self.specs)  # a bad graph is refused before anything starts
        identity = run_identity(self.specs)
        self.store = RunStore.open(out, identity, resume)
        self.rounds = requested_rounds(self.specs, rounds)
        self.manifest = RunManifest(self.specs, self.store, identity)
        self.show_progress = show_progress
        self._entries = self._read_entries()
        self._phases: list[dict] = []
        self.workers: list[dict] = []
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        count = min(workers or max(int(ray.cluster_resources().get("CPU", 1)), 1), len(self.specs))
        shards = [self.specs[i::count] for i in range(count)]
        actor = ray.remote(num_cpus=1, num_gpus=worker_gpus, max_restarts=0)(ShardActor)
        self.actors = [actor.remote() for _ in shards]
        try:
            self._write("running")  # the actors check that they see this manifest
            started = [a.start.remote(shard, str(self.store.root.absolute()), self.rounds, self.manifest.run_id)
                       for a, shard in zip(self.actors, shards)]
            self.workers = [self._get(ref, None) for ref in started]
        except BaseException:
            self.close()
            raise
        self._write("running")

    def _read_entries(self) -> dict[str, dict]:
        return {spec.name: world_entry(spec, self.store.world(spec.name, repair=False), self.rounds[spec.name])
                for spec in self.specs}

    def _write(self, status: str) -> dict:
        return self.manifest.write(status, self._entries, add_phase_tables(*self._phases),
                                   ray={"workers": self.workers})

    def _get(self, ref, worker: dict | None):
        """A result from an actor; a dead actor or its error becomes a one-line RunError."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:  # the actor's own exception (bad input stays one line)
            if isinstance(error.cause, Exception):
                raise error.cause from None
            raise
        except self.ray.exceptions.RayActorError:
            where = f" (pid {worker['pid']} on {worker['node']}, worlds {', '.join(worker['worlds'])})" if worker else ""
            raise RunError(f"a Ray worker died{where}; run the same command with --resume to continue") from None

    def _steps_done(self) -> int:
        paths = (self.store.world_dir(spec.name) / f"{PROGRESS}.jsonl" for spec in self.specs)
        return sum(path.read_bytes().count(b"\n") for path in paths if path.exists())

    def run(self) -> dict:
        total = sum(phases_per_round(spec) * self.rounds[spec.name] for spec in self.specs)
        pending = {actor.run.remote(): worker for actor, worker in zip(self.actors, self.workers)}
        with tqdm(total=total, initial=self._steps_done(), disable=not self.show_progress, unit="phase",
                  dynamic_ncols=True) as bar:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                for ref in done:
                    report = self._get(ref, pending.pop(ref))
                    self._entries.update(report["worlds"])
                    self._phases.append(report["phases"])
                    self._write("running")
                bar.update(self._steps_done() - bar.n)
        return self._write("complete")

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._owns_ray:
            self.ray.shutdown()
