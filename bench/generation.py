"""Batched vs one-request-per-call generation on the default model, and what the contract's
extras cost: an assistant prefix and per-token log-probs, against plain generation.

The batched tokens/s printed here is the ceiling the simulation's throughput is measured
against (bench/simulation.py); the prefix and log-prob rows should cost <= 10% per token.
Last, K samples per prompt (self-play, SPPO, MCTS expansion) with the prompt pass shared by a
request's K rows against every row prefilled on its own: same requests, same tokens.
Usage: python bench/generation.py [--model NAME] [--prompts 16] [--repeats 3] [--k 4]
"""

from __future__ import annotations

import argparse
import dataclasses
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


PREFIX = "Here is my advice:"
EXTRAS = {
    "plain": {},
    "assistant prefix": {"prefix": PREFIX},
    "logprobs=True": {"logprobs": True},
    "prefix + logprobs": {"prefix": PREFIX, "logprobs": True},
}


def per_token_costs(backend: HFBackend, requests: list[GenerationRequest], repeats: int) -> dict[str, tuple]:
    """Per mode, the best of ``repeats`` batched runs: (tokens, seconds, ms per token).

    The modes interleave within each repeat so load from other processes hits them alike; a
    prefix changes what is sampled, so modes compare per generated token.
    """
    best: dict[str, tuple] = {}
    for _ in range(repeats):
        for mode, extra in EXTRAS.items():
            tokens, seconds = measure(backend, [dataclasses.replace(r, **extra) for r in requests], batched=True)
            if mode not in best or seconds / tokens < best[mode][2] / 1000:
                best[mode] = (tokens, seconds, 1000 * seconds / tokens)
    return best


def batched_tokens_per_second(backend: HFBackend, requests: list[GenerationRequest]) -> float:
    tokens, seconds = measure(backend, requests, batched=True)
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=4, help="samples per prompt in the shared-prompt comparison")
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
    costs = per_token_costs(backend, requests, args.repeats)
    plain = costs["plain"][2]
    print(f"\nbest of {args.repeats} batched runs per mode (same requests, same seeds)")
    print(f"{'mode':<24}{'tokens':>8}{'seconds':>10}{'ms/token':>10}{'vs plain':>10}")
    for mode, (tokens, seconds, ms) in costs.items():
        print(f"{mode:<24}{tokens:>8}{seconds:>10.2f}{ms:>10.2f}{ms / plain - 1:>+10.1%}")
    shared_prompt_pass(backend, requests[: max(1, args.prompts // args.k)], args.k, args.repeats)


def shared_prompt_pass(backend: HFBackend, requests: list[GenerationRequest], k: int, repeats: int) -> None:
    """K samples per request, the prompt pass shared by the K rows vs once per row (best of repeats)."""
    sampled = [dataclasses.replace(r, n=k) for r in requests]
    best: dict[bool, tuple[int, float]] = {}
    for _ in range(repeats):
        for share in (True, False):
            backend.share_prompts = share
            tokens, seconds = measure(backend, sampled, batched=True)
            if share not in best or seconds < best[share][1]:
                best[share] = (tokens, seconds)
    backend.share_prompts = True
    print(f"\n{len(requests)} prompts x {k} samples, best of {repeats}")
    print(f"{'prompt pass':<24}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    for share, label in ((False, "once per row"), (True, "shared by the K rows")):
        tokens, seconds = best[share]
        print(f"{label:<24}{tokens:>8}{seconds:>10.2f}{tokens / seconds:>10.1f}")
    print(f"shared / per-row seconds: {best[True][1] / best[False][1]:.2f}")


if __name__ == "__main__":
    main()
