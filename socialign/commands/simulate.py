"""`socialign simulate SCENARIO --out DIR`: run Back-Scatter rounds and record them (resumable)."""

from __future__ import annotations

import json

from sandbox import Simulation
from scenarios import load_scenario
from scenarios.schema import MAX_ROUNDS
from socialign.arguments import at_least, output_dir, seed


def register(subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="run a scenario and record its alignment data")
    parser.add_argument("scenario", help="built-in scenario name (quick, classic, community) or a YAML path")
    parser.add_argument("--out", required=True, type=output_dir, help="run directory (created; must be empty or this run)")
    parser.add_argument("--rounds", type=at_least(1, int, MAX_ROUNDS), help="override the scenario's number of rounds")
    parser.add_argument("--seed", type=seed, help="override the scenario's seed")
    parser.add_argument("--resume", action="store_true", help="continue a run killed or stopped earlier")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    loaded = load_scenario(args.scenario)
    simulation = Simulation(loaded, args.out, rounds=args.rounds, seed=args.seed, resume=args.resume,
                            show_progress=not args.quiet)
    try:
        manifest = simulation.run()
    finally:
        simulation.close()
    print(f"run complete: {args.out}  ({manifest['rounds_completed']} rounds, "
          f"{manifest['tokens_generated']} tokens at {manifest['tokens_per_second']:.1f} tokens/s)")
    print("records: " + json.dumps(manifest["counts"]))
    return 0
