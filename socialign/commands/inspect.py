"""`socialign inspect RUN_DIR`: counts, scores before/after revision per group, pairs, failures, speed."""

from __future__ import annotations

import statistics
from collections import defaultdict

from sandbox import RunStore
from sandbox.export import Exporter


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="summarise a run directory")
    parser.add_argument("run_dir")
    parser.set_defaults(func=run)


def _fmt(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f}" if values else "-"


def run(args) -> int:
    store = RunStore.existing(args.run_dir)
    manifest = store.manifest()
    exporter = Exporter(store)
    print(f"run {manifest['run_id']}  scenario {manifest['scenario']}  status {manifest['status']}  "
          f"rounds {manifest['rounds_completed']}/{manifest['rounds_requested']}")
    print("records: " + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()))
    failures = manifest["parse_failure_rate"]
    print(f"parse failures: peer {failures['peer']:.1%}, observer {failures['observer']:.1%}")
    print(f"generated {manifest['tokens_generated']} tokens at {manifest['tokens_per_second']:.1f} tokens/s; "
          f"wall time {manifest['wall_seconds']:.0f} s")
    print("phase seconds: " + ", ".join(f"{k} {v['seconds']:.1f}" for k, v in manifest["phases"].items()))

    dimension = exporter.dimension
    before, after = defaultdict(list), defaultdict(list)
    finals = {a["id"] for a in exporter.finals()}
    for answer in exporter.answers:
        score = exporter.score.get(answer["id"])
        if score is None:
            continue
        if answer["version"] == 0:
            before[answer["group"]].append(score)
        if answer["id"] in finals:
            after[answer["group"]].append(score)
    print(f"\nobserver {dimension} (mean) before -> after revision:")
    print(f"  {'group':<16}{'draft':>8}{'final':>8}{'n':>6}")
    for group in sorted(before):
        print(f"  {group:<16}{_fmt(before[group]):>8}{_fmt(after[group]):>8}{len(before[group]):>6}")
    pairs = exporter.pairs()
    sources = defaultdict(int)
    for pair in pairs:
        sources[pair["source"]] += 1
    print(f"\npairs at margin {exporter.margin}: {len(pairs)} ({', '.join(f'{k} {v}' for k, v in sources.items()) or 'none'})")
    _print_example(exporter)
    return 0


def _print_example(exporter: Exporter) -> None:
    """The revision whose observer score rose most: draft, peer feedback, revision."""
    versions = {(a["round"], a["agent"], a["version"]): a for a in exporter.answers}
    best, gain = None, None
    for answer in exporter.answers:
        draft = versions.get((answer["round"], answer["agent"], 0))
        if answer["version"] == 0 or answer["id"] not in exporter.score or draft["id"] not in exporter.score:
            continue
        delta = exporter.score[answer["id"]] - exporter.score[draft["id"]]
        if gain is None or delta > gain:
            best, gain = (draft, answer), delta
    if best is None:
        return
    draft, revision = best
    feedback = [r for r in exporter.ratings if r["answer_id"] == draft["id"]]
    print(f"\nexample ({draft['agent']}, round {draft['round'] + 1}): {draft['question']}")
    print(f"  draft    [{exporter.score[draft['id']]:.2f}] {draft['text']}")
    for rating in feedback:
        value = f"{rating['rating']:.1f}" if rating["ok"] else "unparsed"
        print(f"  peer {rating['rater']} rates {value}: {rating['reason']}")
    print(f"  revision [{exporter.score[revision['id']]:.2f}] {revision['text']}")
