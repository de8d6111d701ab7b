"""Simulation benchmarks on the real default model: orchestration overhead and replicas.

1. Orchestration overhead: the wall seconds of a simulation's ``run()`` against the same
   backend calls (every call the scheduler made: same requests, same seeds, same order)
   replayed back to back, phase by phase, each a single batched call. ``replay / simulation``
   is the share of the run spent in the backend's batched calls (1.0 = no orchestration
   overhead: prompts, memory, records, manifest). Dependent phases cannot run as one call, so
   this replay, not "the whole round in one call", is the ceiling. ``in calls`` is the
   seconds the run itself spent inside those calls, so ``replay / in calls`` separates noise
   in the model's speed (the same calls timed twice) from time spent outside the model. The
   encoder's calls (memory recall, similarity to the reference: ``Embed`` requests, batched by
   the scheduler like model calls) are replayed too; ``models only`` leaves them out, as this
   bench did before. Run with replicas 1 and 4, ``--repeat`` times each (alternating) to show
   the spread.
2. Replicas: ``--replicas 4`` in one process against the same four worlds run one after the
   other (same loaded model, same records): wall-time ratio.

Usage: python bench/simulation.py [--scenario quick] [--rounds 1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from agents.backends import BackendPool, GenerationRequest
from agents.backends.hf import HFBackend
from agents.memory import Encoder
from sandbox.simulation import Simulation, WorldSpec, models_of, plan_worlds
from scenarios import load_scenario


class RecordingBackend(HFBackend):
    """The real backend, keeping every call (and its seconds) so a run's calls can be replayed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[tuple[str, tuple, dict, float]] = []

    def _timed(self, method: str, args: tuple, kwargs: dict):
        started = time.perf_counter()
        result = getattr(HFBackend, method)(self, *args, **kwargs)
        self.recorded.append((method, args, kwargs, time.perf_counter() - started))
        return result

    def generate(self, *args, **kwargs):
        return self._timed("generate", args, kwargs)

    def score(self, *args, **kwargs):
        return self._timed("score", args, kwargs)

    def next_token_logprobs(self, *args, **kwargs):
        return self._timed("next_token_logprobs", args, kwargs)

    def replay(self, methods: tuple[str, ...] = ("generate", "score", "next_token_logprobs")) -> float:
        """Seconds to make the recorded calls of ``methods`` again, back to back (then forget all)."""
        calls, self.recorded = self.recorded, []
        started = time.perf_counter()
        for method, args, kwargs, _ in calls:
            if method in methods:
                getattr(HFBackend, method)(self, *args, **kwargs)
        return time.perf_counter() - started


class RecordingEncoder(Encoder):
    """The real encoder, keeping every call's texts (and seconds) so they can be replayed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.recorded: list[tuple[list[str], float]] = []

    def encode(self, texts):
        started = time.perf_counter()
        vectors = super().encode(texts)
        self._record(list(texts), started, time.perf_counter())
        return vectors

    def _record(self, texts: list[str], started: float, ended: float) -> None:
        self.recorded.append((texts, ended - started))

    def replay(self) -> float:
        """Seconds to encode the recorded texts again, call by call (then forget them)."""
        calls, self.recorded = self.recorded, []
        started = time.perf_counter()
        for texts, _ in calls:
            Encoder.encode(self, texts)
        return time.perf_counter() - started


class RecordingPool(BackendPool):
    def get(self, kind, model, **options):
        key = repr((kind, model, sorted(options.items())))
        if key not in self._loaded:
            self._loaded[key] = RecordingBackend(model, **options)
        return self._loaded[key]


def timed_run(worlds: list[WorldSpec], rounds: int, pool: BackendPool, encoder: Encoder) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="socialign-bench-")) / "run"
    try:
        sim = Simulation(worlds, out, rounds=rounds, pool=pool, encoder=encoder, show_progress=False)
        started = time.perf_counter()
        manifest = sim.run()
        return time.perf_counter() - started, manifest
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quick")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="measure replicas 4 and 1 this many times each")
    args = parser.parse_args()

    loaded = load_scenario(args.scenario)
    encoder = RecordingEncoder(loaded.scenario.memory.embedder)
    encoder.encode(["Hello"])  # the encoder's first-call costs, outside the timed runs too
    encoder.recorded.clear()
    pool = RecordingPool()
    for ref in models_of(plan_worlds([loaded])):
        warm = pool.get(ref.backend, ref.name, **ref.options)  # load, and pay first-call costs here
        warm.generate([GenerationRequest([{"role": "user", "content": "Hello"}], max_new_tokens=4)])
        warm.recorded.clear()

    print(f"scenario {args.scenario}, {args.rounds} round(s), model(s): "
          f"{', '.join(b.model_name for b in pool.backends())}")
    print(f"{'':<34}{'simulation s':>13}{'in calls s':>11}{'replay s':>10}{'calls':>7}"
          f"{'replay/sim':>12}{'replay/in calls':>17}{'models only: replay/sim':>25}")
    walls: dict[int, float] = {}  # the last measurement per replica count
    for _ in range(args.repeat):
        for replicas in (4, 1):
            worlds = plan_worlds([loaded], replicas=replicas)
            wall, manifest = timed_run(worlds, args.rounds, pool, encoder)
            calls = sum(len(b.recorded) for b in pool.backends()) + len(encoder.recorded)
            in_calls = (sum(seconds for b in pool.backends() for *_, seconds in b.recorded)
                        + sum(seconds for _, seconds in encoder.recorded))
            model_replay = sum(backend.replay() for backend in pool.backends())
            replay = model_replay + encoder.replay()
            walls[replicas] = wall
            print(f"{f'orchestration, replicas {replicas}':<34}{wall:>13.1f}{in_calls:>11.1f}{replay:>10.1f}"
                  f"{calls:>7}{replay / wall:>12.2f}{replay / in_calls:>17.2f}{model_replay / wall:>25.2f}")
            print(f"{'':<34}({manifest['tokens_generated']} tokens, {manifest['counts']})")

    # World r0 alone was the replicas-1 run; run r1..r3 alone too.
    sequential = walls[1] + sum(timed_run([world], args.rounds, pool, encoder)[0]
                                for world in plan_worlds([loaded], replicas=4)[1:])
    for backend in pool.backends():
        backend.recorded.clear()
    encoder.recorded.clear()
    print(f"replicas 4 in one process: {walls[4]:.1f} s; the same four worlds one after another: {sequential:.1f} s; "
          f"ratio {walls[4] / sequential:.2f}")


if __name__ == "__main__":
    main()
