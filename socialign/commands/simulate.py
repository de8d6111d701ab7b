"""`socialign simulate SCENARIO... --out DIR [--ray [ADDRESS]]`: run Back-Scatter rounds and record them (resumable)."""

from __future__ import annotations

import json

from sandbox.simulation import Simulation, plan_worlds
from scenarios import load_scenario
from scenarios.schema import MAX_REPLICAS, MAX_ROUNDS
from socialign.arguments import at_least, output_dir, seed
from socialign.errors import UserError

LOCAL = "local"  # --ray with no address: start a local Ray
MAX_WORKERS = 4096


def register(subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="run scenarios and record their alignment data")
    parser.add_argument("scenarios", nargs="+", metavar="scenario",
                        help="built-in scenario name (`socialign scenarios` lists them) or a YAML path; several run "
                             "together")
    parser.add_argument("--out", required=True, type=output_dir, help="run directory (created; must be empty or this run)")
    parser.add_argument("--rounds", type=at_least(1, int, MAX_ROUNDS), help="override every scenario's number of rounds")
    parser.add_argument("--replicas", type=at_least(1, int, MAX_REPLICAS),
                        help="override every scenario's replicas: independent copies of each world, one batched run")
    parser.add_argument("--seed", type=seed, help="override the scenarios' seed (replica seeds derive from it)")
    parser.add_argument("--resume", action="store_true", help="continue a run killed or stopped earlier")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                        help="shard the worlds across Ray actors, each with its own backends; joins the cluster at "
                             "ADDRESS, or starts a local Ray without one (needs the 'ray' extra)")
    parser.add_argument("--workers", type=at_least(1, int, MAX_WORKERS),
                        help="with --ray: number of actors (default: one per CPU of the cluster, at most one per world)")
    parser.add_argument("--worker-gpus", type=at_least(0.0, float, 64.0), default=0.0,
                        help="with --ray: GPUs each actor reserves (e.g. 1 to give each its own GPU)")
    parser.set_defaults(func=run)


def run(args) -> int:
    worlds = plan_worlds([load_scenario(name) for name in args.scenarios], args.seed, args.replicas)
    if args.ray is None:
        if args.workers is not None or args.worker_gpus:
            raise UserError("--workers and --worker-gpus need --ray")
        simulation = Simulation(worlds, args.out, rounds=args.rounds, resume=args.resume, show_progress=not args.quiet)
    else:
        from sandbox.distributed import RaySimulation

        simulation = RaySimulation(worlds, args.out, rounds=args.rounds, resume=args.resume,
                                   address=None if args.ray == LOCAL else args.ray, workers=args.workers,
                                   worker_gpus=args.worker_gpus, show_progress=not args.quiet)
    try:
        manifest = simulation.run()
    finally:
        simulation.close()
    print(f"run complete: {args.out}  ({len(worlds)} world(s), {manifest['rounds_completed']} rounds, "
          f"{manifest['tokens_generated']} tokens at {manifest['tokens_per_second']:.1f} tokens/s)")
    print("records: " + json.dumps(manifest["counts"]))
    return 0
