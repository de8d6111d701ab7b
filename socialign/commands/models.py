"""`socialign models`: list the built-in model aliases, where they resolve, whether cached."""

from __future__ import annotations

from agents.registry import describe


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list built-in model aliases and their status")
    parser.set_defaults(func=run)


def run(args) -> int:
    for row in describe():
        print(f"{row['alias']}  [{row['kind']}]  {row['status']}")
        print(f"    {row['description']}")
        print(f"    source:      {row['source']}")
        print(f"    resolves to: {row['resolves_to']}")
    return 0
