"""`socialign inspect RUN_DIR`: counts, calls per phase, scores before/after revision, pairs, speed,
a few chosen/rejected examples and what the export filters dropped."""

from __future__ import annotations

import statistics
from collections import defaultdict

from sandbox.export import read_filters, world_exporters
from sandbox.store import RunStore
from sandbox.world_export import Exporter
from socialign.commands.export import filters_summary

EXAMPLES = 3  # chosen/rejected pairs shown
SHOWN_CHARS = 240


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="summarise a run directory")
    parser.add_argument("run_dir", help="a run directory (what simulate --out wrote)")
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
    pairs, sources, examples = 0, defaultdict(int), []
    for exporter in exporters.values():
        finals = {a.id for a in exporter.finals()}
        for answer in exporter.answers:
            score = exporter.observed.get(answer.id)
            if score is None:
                continue
            if answer.version == 0:
                before[answer.group].append(score)
            if answer.id in finals:
                after[answer.group].append(score)
        for pair in exporter.pairs():
            pairs += 1
            sources[pair["source"]] += 1
            examples.append(pair)
    first = next(iter(exporters.values()), None)
    if first is None:
        return 0
    print(f"\nobserver {first.dimension} (mean) before -> after revision:")
    print(f"  {'group':<16}{'draft':>8}{'final':>8}{'n':>6}")
    for group in sorted(before):
        print(f"  {group:<16}{_fmt(before[group]):>8}{_fmt(after[group]):>8}{len(before[group]):>6}")
    print(f"\npairs ranked by {first.rank_by} at margin {first.margin:.3f}: {pairs} "
          f"({', '.join(f'{k} {v}' for k, v in sources.items()) or 'none'})")
    _print_pairs(examples)
    for exporter in exporters.values():
        if _print_example(exporter):
            break
    report = read_filters(args.run_dir)
    if report is None:
        print("\nexport filters: not exported yet (run `socialign export RUN_DIR`)")
    else:
        print("\nexport filters:\n" + filters_summary(report))
    return 0


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _print_pairs(pairs: list[dict]) -> None:
    """The pairs with the widest score gap: question, chosen and rejected with their judges."""
    shown = sorted(pairs, key=lambda p: (p["score_rejected"] - p["score_chosen"], p["meta"]["chosen"]["id"]))[:EXAMPLES]
    for pair in shown:
        chosen, rejected = pair["meta"]["chosen"], pair["meta"]["rejected"]
        print(f"\n  [{pair['source']}] {_short(pair['prompt'][0]['content'])}  (expected: {chosen['expected'] or '?'})")
        for label, side, score in (("chosen", pair["chosen"], pair["score_chosen"]),
                                   ("rejected", pair["rejected"], pair["score_rejected"])):
            meta = chosen if label == "chosen" else rejected
            judges = ", ".join(f"{k} {v:.2f}" for k, v in meta["judges"].items())
            print(f"    {label:<9}[{score:.2f}; {judges}] {_short(side[0]['content'])}")


def _print_example(exporter: Exporter) -> bool:
    """The revision whose observer score rose most: draft, peer feedback, revision."""
    versions = {(a.round, a.agent, a.version): a for a in exporter.answers}
    best, gain = None, None
    for answer in exporter.answers:
        draft = versions.get((answer.round, answer.agent, 0))
        if answer.version == 0 or answer.id not in exporter.observed or draft.id not in exporter.observed:
            continue
        delta = exporter.observed[answer.id] - exporter.observed[draft.id]
        if gain is None or delta > gain:
            best, gain = (draft, answer), delta
    if best is None:
        return False
    draft, revision = best
    feedback = [r for r in exporter.ratings if r.answer_id == draft.id]
    print(f"\nexample ({draft.id}): {draft.question}")
    print(f"  draft    [{exporter.observed[draft.id]:.2f}] {draft.text}")
    for rating in feedback:
        value = f"{rating.rating:.1f}" if rating.ok else "unparsed"
        print(f"  peer {rating.rater} rates {value}: {rating.reason}")
    print(f"  revision [{exporter.observed[revision.id]:.2f}] {revision.text}")
    return True
