"""`socialign inspect RUN_DIR`: counts, calls per phase, scores before/after revision, pairs, speed."""

from __future__ import annotations

import statistics
from collections import defaultdict

from sandbox import RunStore
from sandbox.export import Exporter, world_exporters


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="summarise a run directory")
    parser.add_argument("run_dir")
    parser.set_defaults(func=run)


def _fmt(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f}" if values else "-"


def run(args) -> int:
    store = RunStore.existing(args.run_dir)
    manifest = store.manifest()
    exporters = world_exporters(store)
    print(f"run {manifest['run_id']}  worlds {', '.join(manifest['worlds'])}  status {manifest['status']}  "
          f"rounds {manifest['rounds_completed']}/{manifest['rounds_requested']}")
    print("records: " + ", ".join(f"{k} {v}" for k, v in manifest["counts"].items()))
    print("failure rate: " + ", ".join(f"{k} {v:.1%}" for k, v in manifest["failure_rate"].items()))
    print(f"generated {manifest['tokens_generated']} tokens at {manifest['tokens_per_second']:.1f} tokens/s; "
          f"wall time {manifest['wall_seconds']:.0f} s")
    print("backend calls per phase (calls / requests / seconds):")
    for phase, models in manifest["phases"].items():
        for model, c in models.items():
            print(f"  {phase:<10}{model:<28}{c['calls']:>5} / {c['requests']:>5} / {c['seconds']:>7.1f}")

    before, after = defaultdict(list), defaultdict(list)
    pairs, sources = 0, defaultdict(int)
    for exporter in exporters.values():
        finals = {a.id for a in exporter.finals()}
        for answer in exporter.answers:
            score = exporter.score.get(answer.id)
            if score is None:
                continue
            if answer.version == 0:
                before[answer.group].append(score)
            if answer.id in finals:
                after[answer.group].append(score)
        for pair in exporter.pairs():
            pairs += 1
            sources[pair["source"]] += 1
    first = next(iter(exporters.values()), None)
    if first is None:
        return 0
    print(f"\nobserver {first.dimension} (mean) before -> after revision:")
    print(f"  {'group':<16}{'draft':>8}{'final':>8}{'n':>6}")
    for group in sorted(before):
        print(f"  {group:<16}{_fmt(before[group]):>8}{_fmt(after[group]):>8}{len(before[group]):>6}")
    print(f"\npairs at margin {first.margin}: {pairs} ({', '.join(f'{k} {v}' for k, v in sources.items()) or 'none'})")
    for exporter in exporters.values():
        if _print_example(exporter):
            break
    return 0


def _print_example(exporter: Exporter) -> bool:
    """The revision whose observer score rose most: draft, peer feedback, revision."""
    versions = {(a.round, a.agent, a.version): a for a in exporter.answers}
    best, gain = None, None
    for answer in exporter.answers:
        draft = versions.get((answer.round, answer.agent, 0))
        if answer.version == 0 or answer.id not in exporter.score or draft.id not in exporter.score:
            continue
        delta = exporter.score[answer.id] - exporter.score[draft.id]
        if gain is None or delta > gain:
            best, gain = (draft, answer), delta
    if best is None:
        return False
    draft, revision = best
    feedback = [r for r in exporter.ratings if r.answer_id == draft.id]
    print(f"\nexample ({draft.id}): {draft.question}")
    print(f"  draft    [{exporter.score[draft.id]:.2f}] {draft.text}")
    for rating in feedback:
        value = f"{rating.rating:.1f}" if rating.ok else "unparsed"
        print(f"  peer {rating.rater} rates {value}: {rating.reason}")
    print(f"  revision [{exporter.score[revision.id]:.2f}] {revision.text}")
    return True
