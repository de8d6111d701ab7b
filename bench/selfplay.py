"""Self-play judging throughput on the real default model: the phase vs the backend's batched limit.

Runs a self-play scenario (default: the built-in ``selfplay``) with a recording backend. For
each round, the phase's judging wall time runs from the end of its K-sample generate call to
the start of the next backend call (or the end of the run): the judge call, the verifiers,
win rates, ratings, records and the manifest. The limit is the same judge requests replayed
as one batched call per round (what the scheduler asked for, with nothing around it). Both
process the same prompt tokens, so ``limit s / phase s`` is the phase's judging tokens/s as a
share of the backend's batched tokens/s.

Usage: python bench/selfplay.py [--scenario selfplay] [--rounds 1] [--replicas 2]
"""

from __future__ import annotations

import argparse
import time

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.memory import Encoder
from bench.simulation import RecordingBackend, RecordingPool, timed_run
from sandbox import plan_worlds
from sandbox.simulation import models_of
from scenarios import load_scenario

PAIRWISE = ["1", "2"]  # the self-play judges' candidates (observer ratings read a scale's digits)


class TimedBackend(RecordingBackend):
    """Records every call with its start and end time (perf_counter)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timeline: list[tuple[str, tuple, float, float]] = []

    def _timed(self, method: str, *args):
        started = time.perf_counter()
        result = getattr(HFBackend, method)(self, *args)
        self.timeline.append((method, args, started, time.perf_counter()))
        return result

    def generate(self, requests):
        return self._timed("generate", requests)

    def next_token_logprobs(self, prompts, candidates, prefix=""):
        return self._timed("next_token_logprobs", prompts, candidates, prefix)


class TimedPool(RecordingPool):
    def get(self, kind, model, **options):
        key = repr((kind, model, sorted(options.items())))
        if key not in self._loaded:
            self._loaded[key] = TimedBackend(model, **options)
        return self._loaded[key]


def prompt_tokens(backend: HFBackend, prompts) -> int:
    return sum(len(backend.renderer.prompt_ids(list(p))) for p in prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="selfplay")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()

    loaded = load_scenario(args.scenario)
    if loaded.scenario.selfplay is None:
        raise SystemExit(f"scenario {args.scenario} has no selfplay phase")
    worlds = plan_worlds([loaded], replicas=args.replicas)
    pool = TimedPool()
    (ref,) = models_of(worlds)  # one model plays and judges (the built-in scenario's case)
    backend = pool.get(ref.backend, ref.name, **ref.options)
    backend.generate([GenerationRequest([{"role": "user", "content": "Hello"}], max_new_tokens=4)])  # warm up
    backend.timeline.clear()
    k = loaded.scenario.selfplay.k

    wall, _ = timed_run(worlds, args.rounds, pool, Encoder(loaded.scenario.memory.embedder))
    run_end = time.perf_counter()
    timeline = backend.timeline
    phase_seconds, judge_calls = 0.0, []
    for index, (method, call_args, _, ended) in enumerate(timeline):
        if method == "generate" and any(r.n == k for r in call_args[0]):  # the phase's K samples
            judge = timeline[index + 1]
            assert judge[0] == "next_token_logprobs" and list(judge[1][1]) == PAIRWISE
            following = timeline[index + 2][2] if index + 2 < len(timeline) else run_end
            phase_seconds += following - ended
            judge_calls.append(judge[1])
    started = time.perf_counter()
    for prompts, candidates, prefix in judge_calls:
        HFBackend.next_token_logprobs(backend, prompts, candidates, prefix)
    limit_seconds = time.perf_counter() - started
    tokens = sum(prompt_tokens(backend, prompts) for prompts, _, _ in judge_calls)
    requests = sum(len(prompts) for prompts, _, _ in judge_calls)
    print(f"scenario {args.scenario}, {args.rounds} round(s), {args.replicas} world(s), K={k}, model {backend.model_name}; "
          f"run {wall:.1f} s")
    print(f"{'':<28}{'seconds':>9}{'tokens/s':>10}")
    print(f"{'self-play judging (phase)':<28}{phase_seconds:>9.2f}{tokens / phase_seconds:>10.0f}")
    print(f"{'batched replay (limit)':<28}{limit_seconds:>9.2f}{tokens / limit_seconds:>10.0f}")
    print(f"{len(judge_calls)} judge call(s), {requests} requests, {tokens} prompt tokens; "
          f"phase / limit tokens/s: {limit_seconds / phase_seconds:.2f}")


if __name__ == "__main__":
    main()
