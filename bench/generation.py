"""Batched vs one-request-per-call generation on the default model.

The batched tokens/s printed here is the ceiling the simulation's throughput is measured
against (bench/simulation.py). Usage: python bench/generation.py [--model NAME] [--prompts 16]
"""

from __future__ import annotations

import argparse
import time

from agents.backends import GenerationRequest
from agents.backends.hf import HFBackend
from agents.registry import DEFAULT_CHAT_MODEL

TOPICS = [
    "a friend who forgot your birthday", "sharing chores fairly", "a coworker taking credit",
    "returning a lost phone", "telling a hard truth kindly", "a noisy neighbour",
    "lending money to family", "an online argument", "keeping a secret", "helping a new student",
    "splitting a restaurant bill", "apologising after a fight", "saying no to extra work",
    "a friend's bad haircut", "reporting a safety issue", "welcoming a new neighbour",
]


def bench_requests(count: int, max_new_tokens: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            messages=[{"role": "user", "content": f"Give short advice about {TOPICS[i % len(TOPICS)]}."}],
            max_new_tokens=max_new_tokens,
            temperature=0.7,
            seed=i,
        )
        for i in range(count)
    ]


def measure(backend: HFBackend, requests: list[GenerationRequest], batched: bool) -> tuple[int, float]:
    """Generated tokens and seconds, either in one call or one call per request."""
    started = time.perf_counter()
    if batched:
        outputs = backend.generate(requests)
    else:
        outputs = [backend.generate([request])[0] for request in requests]
    seconds = time.perf_counter() - started
    return sum(c.num_tokens for completions in outputs for c in completions), seconds


def batched_tokens_per_second(backend: HFBackend, requests: list[GenerationRequest]) -> float:
    tokens, seconds = measure(backend, requests, batched=True)
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    backend = HFBackend(args.model)
    requests = bench_requests(args.prompts, args.max_new_tokens)
    backend.generate(requests[:2])  # warm-up
    one_tokens, one_seconds = measure(backend, requests, batched=False)
    all_tokens, all_seconds = measure(backend, requests, batched=True)
    one_rate, all_rate = one_tokens / one_seconds, all_tokens / all_seconds
    print(f"model {args.model}, {args.prompts} prompts, max_new_tokens {args.max_new_tokens}")
    print(f"{'mode':<24}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    print(f"{'one request per call':<24}{one_tokens:>8}{one_seconds:>10.1f}{one_rate:>10.1f}")
    print(f"{'all in one call':<24}{all_tokens:>8}{all_seconds:>10.1f}{all_rate:>10.1f}")
    print(f"batched / sequential throughput ratio: {all_rate / one_rate:.2f}x")


if __name__ == "__main__":
    main()
