"""One Back-Scatter round at 100, 1k (and 10k) agents on the tiny random model: where the time goes.

Per size, in a fresh process (so peak RSS is that size's): the round's wall seconds and per
agent, peak RSS, the share of the round spent embedding (every encoder pass: memory queries
and the verifiable judges) and in memory search after encoding (faiss + building hits), and
two generation ratios against the same backend calls replayed back to back, phase by phase,
each a single batched call (bench/simulation.py's replay):

- ``gen in-call``: generation tokens/s inside the round's generate calls ÷ the replayed
  generate calls' tokens/s (does the round batch as well as one call would?);
- ``model/round``: every replayed backend call's seconds ÷ the round's wall seconds (1.0 = no
  time outside the model: prompts, memory, judging, records, manifest).

Setup (loading, building the world, opening stores) is outside the round and printed apart.
``--profile N`` runs N agents under cProfile and prints the functions with most own time.

Usage: python bench/scale.py [--agents 100 1000 10000] [--no-replay-above 5000] [--profile 1000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from simulation import RecordingPool

from agents.backends import GenerationRequest
from agents.memory import EmbeddingMemory, Encoder
from agents.random_model import build_random_llama
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario

SCENARIO = """\
name: scale
seed: 0
rounds: 1
questions: {{bank: social, per_round: 50}}
graph: {{generator: cycle}}
agents:
  - group: crowd
    count: {agents}
    persona: You are a member of a large community.
    model: {{name: "{model}"}}
    sampling: {{temperature: 0.8, max_new_tokens: 8}}
    seed_memories:
      - {{question: "Should I tell a friend a hard truth?", answer: "Yes, kindly."}}
      - {{question: "Is it fine to borrow without asking?", answer: "No, ask first."}}
observers: {{model: {{name: "{model}"}}}}
backscatter: {{peers: 2, max_revisions: 1, stop_at_mean_rating: 7.0, reason_tokens: 8}}
memory: {{k: 1, threshold: -1.0}}
"""


class TimedEncoder(Encoder):
    seconds = 0.0
    texts = 0

    def encode(self, texts):
        started = time.perf_counter()
        vectors = super().encode(texts)
        TimedEncoder.seconds += time.perf_counter() - started
        TimedEncoder.texts += len(texts)
        return vectors


def timed_search(search):
    """EmbeddingMemory.search, counting its seconds after the query encoding (faiss + hits)."""

    def wrapper(self, queries, k=1, threshold=None):
        started, encoded = time.perf_counter(), TimedEncoder.seconds
        hits = search(self, queries, k, threshold)
        wrapper.seconds += time.perf_counter() - started - (TimedEncoder.seconds - encoded)
        return hits

    wrapper.seconds = 0.0
    return wrapper


def one_round(agents: int, model: str, work: Path, profile: bool, replay: bool) -> dict:
    path = work / f"scale-{agents}.yaml"
    path.write_text(SCENARIO.format(agents=agents, model=model))
    search = EmbeddingMemory.search = timed_search(EmbeddingMemory.search)
    pool = RecordingPool()
    backend = pool.get("hf", model)  # loaded, and first-call costs paid, before the round
    backend.generate([GenerationRequest([{"role": "user", "content": "Hello"}], max_new_tokens=4)])
    encoder = TimedEncoder("minilm-l6")
    started = time.perf_counter()
    sim = Simulation(plan_worlds([load_scenario(path)]), work / f"run-{agents}", pool=pool, encoder=encoder,
                     show_progress=False)
    setup = time.perf_counter() - started
    backend.recorded.clear()
    TimedEncoder.seconds = TimedEncoder.texts = 0
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    manifest = sim.run()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    embed, embedded, faiss_seconds = TimedEncoder.seconds, TimedEncoder.texts, search.seconds
    generate = [call for call in backend.recorded if call[0] == "generate"]
    tokens = manifest["tokens_generated"]
    in_call = sum(seconds for *_, seconds in generate)
    model_in_round = sum(seconds for *_, seconds in backend.recorded)
    calls = list(backend.recorded)
    replay_generate = backend.replay(("generate",)) if replay else float("nan")
    backend.recorded = calls
    replay_all = backend.replay() if replay else float("nan")
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return {
        "agents": agents, "setup_s": setup, "round_s": wall, "per_agent_ms": 1000 * wall / agents,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "embed_share": embed / wall, "embed_ms_per_agent": 1000 * embed / agents, "texts_embedded": embedded,
        "faiss_share": faiss_seconds / wall, "model_in_round_share": model_in_round / wall,
        "tokens": tokens, "gen_in_call_ratio": replay_generate / in_call, "model_over_round": replay_all / wall,
        "calls": len(calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--profile", type=int, metavar="N", help="profile one round of N agents instead")
    parser.add_argument("--no-replay-above", type=int, default=5000, metavar="N",
                        help="skip the replay (the two generation ratios) for sizes above N, to save time")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replay = args.child <= args.no_replay_above
        print(json.dumps(one_round(args.child, args.model, Path(args.work), args.profile is not None, replay)))
        return
    with tempfile.TemporaryDirectory(prefix="socialign-scale-") as work:
        model = build_random_llama(Path(work) / "tiny")
        sizes = [args.profile] if args.profile else args.agents
        rows = []
        for agents in sizes:
            command = [sys.executable, __file__, "--child", str(agents), "--model", model, "--work", work,
                       "--no-replay-above", str(args.no_replay_above)]
            if args.profile:
                command += ["--profile", str(agents)]
            done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
            rows.append(json.loads(done.stdout.splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    header = ("agents", "setup s", "round s", "ms/agent", "RSS GB", "embed", "embed ms/agent", "faiss",
              "gen in-call", "model/round")
    print("".join(f"{h:>15}" for h in header))
    for r in rows:
        values = (r["agents"], f"{r['setup_s']:.1f}", f"{r['round_s']:.1f}", f"{r['per_agent_ms']:.1f}",
                  f"{r['peak_rss_gb']:.2f}", f"{r['embed_share']:.1%}", f"{r['embed_ms_per_agent']:.2f}",
                  f"{r['faiss_share']:.1%}", f"{r['gen_in_call_ratio']:.2f}", f"{r['model_over_round']:.2f}")
        print("".join(f"{v:>15}" for v in values))
    for small, large in pairwise(rows):
        print(f"round {large['agents']} / round {small['agents']}: {large['round_s'] / small['round_s']:.2f}x "
              f"({large['agents'] / small['agents']:.0f}x the agents)")


if __name__ == "__main__":
    main()
