"""`socialign scenarios`: the built-in scenarios with their descriptions (names `simulate` takes)."""

from __future__ import annotations

from scenarios import builtin_scenarios, load_scenario


def register(subparsers) -> None:
    parser = subparsers.add_parser("scenarios", help="list the built-in scenarios and what each simulates")
    parser.set_defaults(func=run)


def run(args) -> int:
    names = builtin_scenarios()
    width = max(len(name) for name in names)
    for name in names:
        loaded = load_scenario(name)
        scenario = loaded.scenario
        print(f"{name:<{width}}  {scenario.description}")
        print(f"{'':<{width}}  agents {scenario.agent_count}, rounds {scenario.rounds}, questions "
              f"{len(loaded.train_questions)} training + {len(loaded.heldout_questions)} held out")
    return 0
