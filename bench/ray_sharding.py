"""`simulate --ray` with 2 local workers against one process, on 4 replicas of a world (tiny model).

Both runs make the same records (each world's seed and requests are the same); the table gives
wall seconds of the rounds alone and with start-up (one process: loading the model and encoder;
Ray: starting the cluster, the actors, and each actor loading its own model and encoder).
On one machine the two workers share its cores with each other, so the ratio says what
sharding costs or gains here; on a cluster each worker has its own node.

Usage: python bench/ray_sharding.py [--agents 40] [--rounds 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
from scale import SCENARIO

from agents.random_model import build_random_llama
from sandbox.distributed import RaySimulation
from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="socialign-ray-") as work:
        work = Path(work)
        path = work / "scale.yaml"
        path.write_text(SCENARIO.format(agents=args.agents, model=build_random_llama(work / "tiny")))
        worlds = plan_worlds([load_scenario(path)], replicas=args.replicas)

        started = time.perf_counter()
        local = Simulation(worlds, work / "local", rounds=args.rounds, show_progress=False)
        ready = time.perf_counter()
        local.run()
        local_run, local_total = time.perf_counter() - ready, time.perf_counter() - started
        local.close()

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        sharded = RaySimulation(worlds, work / "ray", rounds=args.rounds, workers=args.workers, show_progress=False)
        ready = time.perf_counter()
        sharded.run()
        ray_run, ray_total = time.perf_counter() - ready, time.perf_counter() - started
        sharded.close()
        ray.shutdown()

        same = all((work / "local" / "worlds" / w.name / "answers.jsonl").read_text().count("\n")
                   == (work / "ray" / "worlds" / w.name / "answers.jsonl").read_text().count("\n") for w in worlds)
    print(f"{args.replicas} replicas x {args.agents} agents, {args.rounds} round(s), tiny random model; "
          f"answers per world equal: {same}")
    print(f"{'':<28}{'rounds s':>10}{'with start-up s':>17}")
    print(f"{'one process (batched)':<28}{local_run:>10.1f}{local_total:>17.1f}")
    print(f"{f'--ray, {args.workers} local workers':<28}{ray_run:>10.1f}{ray_total:>17.1f}")
    print(f"ray / one process: rounds {ray_run / local_run:.2f}, with start-up {ray_total / local_total:.2f}")


if __name__ == "__main__":
    main()
