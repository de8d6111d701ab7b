"""One Back-Scatter round of the `quick` scenario: our batched phases vs the backend ceiling
vs the SANDBOX way (one backend call per prompt).

Prints the simulation's generated tokens/s against two ceilings: the backend's batched
tokens/s for the same number of generations on short prompts (bench/generation.py's
method), and the round's own recorded requests (same prompts, same budgets) replayed in one
call. The first ratio includes the cost of the round's long prompts (personas, answers and
feedback to prefill); the second isolates the cost of phases depending on each other plus
memory, rating and observer passes. Then the same round run one prompt per call.
Usage: python bench/simulation.py [--scenario quick]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

from generation import batched_tokens_per_second, bench_requests

from agents.backends import BackendPool
from agents.backends.hf import HFBackend
from agents.memory import Encoder
from sandbox import Simulation
from scenarios import load_scenario


class RecordingBackend(HFBackend):
    """The real backend, keeping every generation request so the round can be replayed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded = []

    def generate(self, requests):
        self.recorded.extend(requests)
        return super().generate(requests)


class OnePromptPerCall(HFBackend):
    """The SANDBOX pattern: the same model, but every prompt is its own backend call."""

    def generate(self, requests):
        return [super(OnePromptPerCall, self).generate([request])[0] for request in requests]

    def next_token_logprobs(self, prompts, candidates, prefix=""):
        return [super(OnePromptPerCall, self).next_token_logprobs([p], candidates, prefix)[0] for p in prompts]


class PoolOf(BackendPool):
    """A pool whose models all load as one HFBackend subclass (the bench's variants)."""

    def __init__(self, backend_class: type[HFBackend]) -> None:
        super().__init__()
        self.backend_class = backend_class

    def get(self, kind, model, **options):
        key = (kind, model)
        if key not in self._loaded:
            self._loaded[key] = self.backend_class(model, **options)
        return self._loaded[key]


def run_round(scenario: str, pool: BackendPool, encoder: Encoder) -> dict:
    out = Path(tempfile.mkdtemp(prefix="socialign-bench-")) / "run"
    try:
        sim = Simulation(load_scenario(scenario), out, rounds=1, pool=pool, encoder=encoder, show_progress=False)
        started = time.perf_counter()
        manifest = sim.run()
        wall = time.perf_counter() - started
        answers = sim.records["answers"]
        generations = len(answers) + len(sim.records["ratings"])  # answers + peer reasons
        generating = sum(manifest["phases"][p]["seconds"] for p in ("draft", "rate", "revise"))
        return {"tokens": manifest["tokens_generated"], "generations": generations, "wall": wall,
                "generating_seconds": generating, "answer_tokens": sum(a["tokens"] for a in answers)}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="quick")
    args = parser.parse_args()

    encoder = Encoder()
    batched_pool = PoolOf(RecordingBackend)
    ours = run_round(args.scenario, batched_pool, encoder)
    (backend,) = batched_pool.backends()
    per_generation = math.ceil(ours["tokens"] / ours["generations"])
    ceiling = batched_tokens_per_second(backend, bench_requests(ours["generations"], per_generation))
    replay = batched_tokens_per_second(backend, list(backend.recorded))
    sandbox_way = run_round(args.scenario, PoolOf(OnePromptPerCall), encoder)

    ours_rate = ours["tokens"] / ours["wall"]
    ours_generating_rate = ours["tokens"] / ours["generating_seconds"]
    sandbox_rate = sandbox_way["tokens"] / sandbox_way["wall"]
    print(f"scenario {args.scenario}: one round, {ours['generations']} generations, {ours['tokens']} tokens")
    print(f"{'':<44}{'tokens/s':>10}{'seconds':>10}")
    print(f"{'simulation, whole round (batched phases)':<44}{ours_rate:>10.1f}{ours['wall']:>10.1f}")
    print(f"{'simulation, generating phases only':<44}{ours_generating_rate:>10.1f}{ours['generating_seconds']:>10.1f}")
    print(f"{'backend ceiling, same count, short prompts':<44}{ceiling:>10.1f}")
    print(f"{'backend ceiling, the round replayed in 1 call':<44}{replay:>10.1f}")
    print(f"{'SANDBOX way, one call per prompt':<44}{sandbox_rate:>10.1f}{sandbox_way['wall']:>10.1f}")
    print(f"simulation / short-prompt ceiling: {ours_rate / ceiling:.2f} (whole round), "
          f"{ours_generating_rate / ceiling:.2f} (generating phases)")
    print(f"simulation / replayed-round ceiling: {ours_rate / replay:.2f} (whole round), "
          f"{ours_generating_rate / replay:.2f} (generating phases)")
    print(f"simulation / SANDBOX way: {ours_rate / sandbox_rate:.2f}x faster")


if __name__ == "__main__":
    main()
