"""Step-level search throughput: the search's generation vs the backend's batched limit, and nodes/s.

For 1, 8 and 64 trees (training problems of the built-in arithmetic scenario), one search of
every tree under one scheduler (search.scenario.search_questions). Then the SAME requests
the search made — every expansion (k candidate steps per expanded node) and every rollout —
are rebuilt from the finished trees (they are seeded by tree and node, so they are the same
requests) and replayed as ONE plain batched ``generate`` call: that is the backend's batched
limit for this work. Reported side by side:

- expansion tokens/s: the expansion tokens over the backend seconds the scheduler charges to
  expansions (a call that serves expansions and rollouts splits its seconds by requests),
  against the expansion requests alone in one call;
- all generation: the search's generated tokens over its whole wall time (Python search
  included) against expansions + rollouts in one call;
- nodes/s: tree nodes created per second of search wall time.

Usage: python bench/mcts.py [--model PATH|alias] [--trees 1 8 64] [--k 4] [--simulations 4]
(default model: a tiny random Llama built in a temp dir, so the numbers measure the machinery.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agents.backends.hf import HFBackend
from agents.engine import Scheduler
from scenarios import load_scenario
from scenarios.schema import MctsConfig
from search.mcts import EXPAND, ROLLOUT, expansion_request
from search.scenario import search_questions, settings_of
from search.values import rollout_ops


def replay(backend: HFBackend, requests) -> tuple[int, float]:
    """Generated tokens and seconds of the requests as one plain batched call."""
    started = time.perf_counter()
    results = backend.generate(requests)
    return sum(c.num_tokens for completions in results for c in completions), time.perf_counter() - started


def measure(backend: HFBackend, trees: int, config: MctsConfig) -> dict:
    questions = list(load_scenario("arithmetic").train_questions)[:trees]
    scheduler = Scheduler()
    started = time.perf_counter()
    searched = search_questions(backend, questions, config, seed=0, scheduler=scheduler)
    wall = time.perf_counter() - started
    table = scheduler.phase_table()
    expand = next(iter(table[EXPAND].values()))
    rollout = next(iter(table.get(ROLLOUT, {}).values()), {"tokens": 0})
    settings = settings_of(config, 0)
    expansions = [expansion_request(tree, node, settings) for tree in searched
                  for node in tree.nodes.values() if node.children]
    rollouts = [op.request for tree in searched for op in rollout_ops(
        tree, [n for n in tree.nodes.values() if n.parent is not None and not n.terminal], settings, backend,
        config.rollouts, config.rollout_temperature)]
    expand_tokens, expand_seconds = replay(backend, expansions)
    all_tokens, all_seconds = replay(backend, expansions + rollouts)
    nodes = sum(len(tree.nodes) - 1 for tree in searched)
    return {
        "trees": trees, "calls": scheduler.steps, "nodes": nodes,
        "expand_tps": expand["tokens"] / expand["seconds"], "expand_limit_tps": expand_tokens / expand_seconds,
        "all_tps": (expand["tokens"] + rollout["tokens"]) / wall, "all_limit_tps": all_tokens / all_seconds,
        "nodes_per_s": nodes / wall, "same_tokens": expand_tokens == expand["tokens"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: a tiny random Llama (measures the machinery)")
    parser.add_argument("--trees", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from agents.random_model import build_random_llama

            model = build_random_llama(Path(tmp))
        backend = HFBackend(model)
        config = MctsConfig(trees=max(args.trees), simulations=args.simulations, k=args.k,
                            step_tokens=args.step_tokens, max_tokens=args.max_tokens, max_steps=4)
        measure(backend, 1, config)  # warm-up
        print(f"model {args.model or 'tiny random Llama'}; k={args.k}, {args.simulations} simulations per step, "
              f"step <= {args.step_tokens} tokens, reply <= {args.max_tokens}, greedy rollouts")
        print("| trees | calls | expansion tok/s | batched limit | ratio | all gen tok/s (wall) | batched limit "
              "| ratio | nodes/s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for trees in args.trees:
            m = measure(backend, trees, config)
            print(f"| {trees} | {m['calls']} | {m['expand_tps']:.0f} | {m['expand_limit_tps']:.0f} | "
                  f"{m['expand_tps'] / m['expand_limit_tps']:.2f} | {m['all_tps']:.0f} | {m['all_limit_tps']:.0f} | "
                  f"{m['all_tps'] / m['all_limit_tps']:.2f} | {m['nodes_per_s']:.1f} |"
                  + ("" if m["same_tokens"] else "  (replayed expansion tokens differ)"))


if __name__ == "__main__":
    main()
