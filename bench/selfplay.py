"""Self-play judging throughput on the real default model: the phase vs the backends' batched limit.

Runs a self-play scenario (default: the built-in ``selfplay``) with recording backends. For
each round, the phase's judging wall time runs from the end of its K-sample generate call to
the start of the next model call (or the end of the run): the judge call, the verifiers'
encoder call, win rates, ratings, records, the memory update and the manifest. The limit is
the same requests replayed with nothing around them: the judge's next-token requests as one
batched call per round, and the verifiers' texts as one encoder call per round (the judging
needs both; printed apart, with the ratio against the judge call alone too). Both process the
same prompt tokens, so ``limit s / phase s`` is the phase's judging tokens/s as a share of the
backends' batched tokens/s.

With the default model the judge call dominates; with a tiny model (a scenario YAML naming
one) the encoder pass is most of the work, which is why it belongs in the limit.

Usage: python bench/selfplay.py [--scenario selfplay] [--rounds 1] [--replicas 2]
"""

from __future__ import annotations

import argparse
import time

from simulation import RecordingBackend, RecordingEncoder, RecordingPool, timed_run

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.memory import Encoder
from sandbox.simulation import models_of, plan_worlds
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


class TimedEncoder(RecordingEncoder):
    """The real encoder, its calls on the backends' timeline."""

    def __init__(self, name: str, timeline: list) -> None:
        super().__init__(name)
        self.timeline = timeline

    def _record(self, texts: list[str], started: float, ended: float) -> None:
        self.timeline.append(("encode", (texts,), started, ended))


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

    encoder = TimedEncoder(loaded.scenario.memory.embedder, backend.timeline)
    encoder.encode(["warm up"])
    backend.timeline.clear()
    wall, _ = timed_run(worlds, args.rounds, pool, encoder)
    run_end = time.perf_counter()
    timeline = backend.timeline
    model_calls = [i for i, (method, *_) in enumerate(timeline) if method != "encode"]
    phase_seconds, judge_calls, embed_calls = 0.0, [], []
    for position, index in enumerate(model_calls):
        method, call_args, _, ended = timeline[index]
        if method == "generate" and any(r.n == k for r in call_args[0]):  # the phase's K samples
            judge = timeline[model_calls[position + 1]]
            assert judge[0] == "next_token_logprobs" and list(judge[1][1]) == PAIRWISE
            following = timeline[model_calls[position + 2]][2] if position + 2 < len(model_calls) else run_end
            phase_seconds += following - ended
            judge_calls.append(judge[1])
            # The scheduler's step runs the judge's call, then the verifiers' one encoder call.
            after = timeline[model_calls[position + 1] + 1]
            if after[0] == "encode" and after[2] < following:
                embed_calls.append(after[1][0])
    started = time.perf_counter()
    for prompts, candidates, prefix in judge_calls:
        HFBackend.next_token_logprobs(backend, prompts, candidates, prefix)
    judge_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for texts in embed_calls:
        Encoder.encode(encoder, texts)
    embed_seconds = time.perf_counter() - started
    limit_seconds = judge_seconds + embed_seconds
    tokens = sum(prompt_tokens(backend, prompts) for prompts, _, _ in judge_calls)
    requests = sum(len(prompts) for prompts, _, _ in judge_calls)
    print(f"scenario {args.scenario}, {args.rounds} round(s), {args.replicas} world(s), K={k}, model {backend.model_name}; "
          f"run {wall:.1f} s")
    print(f"{'':<34}{'seconds':>9}{'tokens/s':>10}")
    print(f"{'self-play judging (phase)':<34}{phase_seconds:>9.2f}{tokens / phase_seconds:>10.0f}")
    print(f"{'batched replay (limit)':<34}{limit_seconds:>9.2f}{tokens / limit_seconds:>10.0f}")
    print(f"{'  of which the judge call':<34}{judge_seconds:>9.2f}")
    print(f"{'  of which the encoder call':<34}{embed_seconds:>9.2f}")
    print(f"{len(judge_calls)} judge call(s), {requests} requests, {tokens} prompt tokens; "
          f"{len(embed_calls)} encoder call(s), {sum(map(len, embed_calls))} texts")
    print(f"phase / limit tokens/s: {limit_seconds / phase_seconds:.2f} "
          f"(against the judge call alone: {judge_seconds / phase_seconds:.2f})")


if __name__ == "__main__":
    main()
