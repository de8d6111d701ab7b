"""The run report: one self-contained HTML file (figures inline as PNG, no script, no network).

What a reader wants from a run at a glance: who scored well where on the graph, how ratings
moved per group and round, whether revision helped, the clearest and the closest preference
pairs with the peers' reasons, self-play win rates and search trees when the run has them,
and training curves and evaluation tables when given. Pairs and scores come from
``sandbox.world_export.Exporter``, so the report shows exactly what export writes.

Model text is data: every string from records, training or evaluation files passes through
``html.escape``, and the page carries no script at all, so nothing in an answer can run.

Each protocol adds its own section (``Protocol.report``, sandbox.protocol): self-play's win
rates, the search trees, a registered protocol's own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.files import write_atomic
from judges.intervals import shown
from sandbox import report_figures as figures
from sandbox.backscatter import RatingRecord
from sandbox.errors import RunError
from sandbox.export import world_exporters
from sandbox.protocols import all_protocols
from sandbox.report_html import (
    EXAMPLES,
    Report,
    absent,
    esc,
    fmt,
    read_rows,
    table,
    text_block,
)
from sandbox.run_info import RunInfo
from sandbox.store import MANIFEST, RunStore
from sandbox.world import World
from sandbox.world_export import Exporter
from scenarios import LoadedScenario, Scenario, ScenarioError

REPORT_FILE = "report.html"
MAX_WORLDS = 8  # worlds drawn in full; a run of many replicas lists the rest


# -- reading the run -----------------------------------------------------------------------


@dataclass
class WorldView:
    """One world of a run: its scenario, records (through the exporter) and rebuilt graph."""

    name: str
    scenario: Scenario
    exporter: Exporter
    world: World | None
    graph_error: str | None = None


def world_views(store: RunStore, info: RunInfo) -> list[WorldView]:
    """The run's worlds, in the manifest's order: each world's records under its own scenario."""
    views = []
    for name, exporter in world_exporters(store).items():
        world_info = info.worlds[name]
        scenario = info.scenarios[world_info.scenario]
        world, error = rebuild_world(scenario, info.scenario_paths[world_info.scenario], world_info.seed)
        views.append(WorldView(name, scenario, exporter, world, error))
    return views


def rebuild_world(scenario: Scenario, scenario_path: Path, seed: int) -> tuple[World | None, str | None]:
    """A world's graph and agent placement rebuilt from its recorded configuration and seed.

    The graph is a pure function of the scenario (generator, params) and the world's seed, or
    of its graph file; a graph file moved since the run leaves the report without the drawing.
    """
    graph_file = None
    if scenario.graph.file:
        graph_file = Path(scenario.graph.file).expanduser()
        if not graph_file.is_absolute():
            graph_file = scenario_path.parent / graph_file
    loaded = LoadedScenario(scenario=scenario, path=scenario_path, sha256="", train_questions=(),
                            heldout_questions=(), graph_file=graph_file)
    try:
        return World(loaded, seed), None
    except ScenarioError as error:
        return None, str(error)


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


# -- per-world numbers -------------------------------------------------------------------


def agent_means(exporter: Exporter) -> dict[str, float]:
    """Each agent's mean observer score over all its scored answers (every version)."""
    collected = defaultdict(list)
    for answer in exporter.answers:
        if answer.id in exporter.observed:
            collected[answer.agent].append(exporter.observed[answer.id])
    return {agent: statistics.fmean(values) for agent, values in collected.items()}


def peer_trajectories(exporter: Exporter) -> dict[str, dict[int, dict[int, float]]]:
    """group -> answer version -> round -> mean peer rating received (failed reads left out)."""
    group_of = {a.id: a.group for a in exporter.answers}
    collected = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for rating in exporter.ratings:
        if rating.ok and rating.answer_id in group_of:
            collected[group_of[rating.answer_id]][rating.version][rating.round].append(rating.rating)
    return {g: {v: {r: statistics.fmean(x) for r, x in rounds.items()} for v, rounds in versions.items()}
            for g, versions in collected.items()}


def observer_trajectories(exporter: Exporter) -> dict[str, dict[str, dict[int, float]]]:
    """group -> draft | final -> round -> mean observer score."""
    finals = {a.id for a in exporter.finals()}
    collected = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for answer in exporter.answers:
        score = exporter.observed.get(answer.id)
        if score is None:
            continue
        if answer.version == 0:
            collected[answer.group]["draft"][answer.round].append(score)
        if answer.id in finals:
            collected[answer.group]["final"][answer.round].append(score)
    return {g: {k: {r: statistics.fmean(x) for r, x in rounds.items()} for k, rounds in kinds.items()}
            for g, kinds in collected.items()}


@dataclass
class RevisionStats:
    draft: list[float] = field(default_factory=list)  # every draft's score
    final: list[float] = field(default_factory=list)  # every final answer's score (a draft if never revised)
    revised: list[tuple[float, float]] = field(default_factory=list)  # (draft, final) of revised answers


def revision_stats(exporter: Exporter) -> dict[str, RevisionStats]:
    drafts = {(a.round, a.agent): a for a in exporter.answers if a.version == 0}
    stats: dict[str, RevisionStats] = defaultdict(RevisionStats)
    for draft in drafts.values():
        if draft.id in exporter.observed:
            stats[draft.group].draft.append(exporter.observed[draft.id])
    for final in exporter.finals():
        if final.id not in exporter.observed:
            continue
        stats[final.group].final.append(exporter.observed[final.id])
        draft = drafts.get((final.round, final.agent))
        if final.version > 0 and draft is not None and draft.id in exporter.observed:
            stats[final.group].revised.append((exporter.observed[draft.id], exporter.observed[final.id]))
    return dict(sorted(stats.items()))


# -- sections ------------------------------------------------------------------------------


def overview_section(report: Report, info: RunInfo) -> None:
    facts = [
        ("run", info.manifest.run_id),
        ("scenario", ", ".join(f"{s.name}: {s.description}" for s in info.scenarios.values())),
        ("status", f"{info.manifest.status}, rounds {info.rounds}"),
        ("worlds", ", ".join(f"{w.name} (seed {w.seed}, rounds {w.rounds_completed}/{w.rounds_requested})"
                             for w in info.worlds.values())),
        ("models", info.model_names),
        ("records", ", ".join(f"{k} {v:,}" for k, v in info.manifest.counts.items())),
        ("parse failures", ", ".join(f"{k} {v:.1%}" for k, v in info.manifest.failure_rate.items())),
        ("generated", (f"{info.manifest.tokens_generated:,} tokens at {info.manifest.tokens_per_second:.1f} tokens/s, "
                       f"wall time {info.manifest.wall_seconds:.0f} s")),
    ]
    phases = [(phase, model, c.get("calls", 0), c.get("requests", 0), c.get("tokens", 0), c.get("seconds", 0.0))
              for phase, models in info.manifest.phases.items() for model, c in models.items()]
    body = table(None, facts)
    if phases:
        body += "<h3>Generation per phase</h3>" + table(
            ["phase", "model", "calls", "requests", "tokens", "seconds"], phases)
    report.add("overview", "Overview", body)


def world_sections(report: Report, view: WorldView, prefix: str, heading: str) -> None:
    exporter, scenario = view.exporter, view.scenario
    dimension, scale = exporter.dimension, tuple(scenario.backscatter.scale)
    colours = figures.group_colours([g.group for g in scenario.agents])
    means = agent_means(exporter)
    if view.world is None:
        graph_body = absent(f"the graph could not be rebuilt: {view.graph_error}")
    else:
        agents = view.world.agents
        graph_body = report.figure(
            f"{prefix}graph",
            figures.graph_figure(view.world.graph, {a.node: means[a.id] for a in agents if a.id in means},
                                 {a.node: a.id for a in agents}, {a.node: a.group for a in agents},
                                 colours, dimension, scale),
            "the graph coloured by agents' mean observer score",
        )
        graph_body += table(["agent", "group", "degree", f"mean {dimension}"],
                            [(a.id, a.group, view.world.graph.degree(a.node), fmt(means.get(a.id)))
                             for a in sorted(agents, key=lambda a: (-means.get(a.id, float("-inf")), a.id))[:20]])
    report.add(f"{prefix}graph", f"{heading}Graph: agents by mean observer {dimension}", graph_body)

    peer, observer = peer_trajectories(exporter), observer_trajectories(exporter)
    body = (report.figure(f"{prefix}trajectories", figures.trajectories_figure(peer, observer, colours, dimension, scale),
                          "rating trajectories per group and round")
            if peer or observer else absent("no ratings or scores yet"))
    report.add(f"{prefix}trajectories", f"{heading}Ratings per group and round", body)

    stats = revision_stats(exporter)
    rows = [(g, fmt(_mean(s.draft)), fmt(_mean(s.final)), len(s.revised),
             sum(f > d for d, f in s.revised), fmt(_mean(f - d for d, f in s.revised), 3))
            for g, s in stats.items()]
    if stats:
        body = report.figure(
            f"{prefix}revision",
            figures.revision_figure([(g, d, f) for g, s in stats.items() for d, f in s.revised],
                                    {g: (_mean(s.draft) or 0.0, _mean(s.final) or 0.0) for g, s in stats.items()},
                                    colours, dimension, scale),
            "observer score before vs after revision",
        ) + table(["group", "draft mean", "final mean", "revised", "improved", "mean gain"], rows)
    else:
        body = absent("no scored answers yet")
    report.add(f"{prefix}revision", f"{heading}Before vs after revision", body)
    report.add(f"{prefix}pairs", f"{heading}Preference pairs", pairs_body(exporter))


def pairs_body(exporter: Exporter) -> str:
    """The clearest pairs (largest score gap) and the closest calls, with every peer's reason."""
    pairs = sorted(exporter.pairs(), key=lambda p: (p["score_rejected"] - p["score_chosen"], _answer_id(p["meta"]["chosen"])))
    if not pairs:
        return absent(f"no pairs at margin {exporter.margin}")
    sources = defaultdict(int)
    for pair in pairs:
        sources[pair["source"]] += 1
    reasons = defaultdict(list)
    for rating in exporter.ratings:
        reasons[rating.answer_id].append(rating)
    summary = (f"<p>{len(pairs)} pairs at margin {esc(exporter.margin)} on <b>{esc(exporter.dimension)}</b> ("
               + esc(", ".join(f"{k} {v}" for k, v in sorted(sources.items()))) + ")</p>")
    best, worst = pairs[:EXAMPLES], pairs[EXAMPLES:][-EXAMPLES:][::-1]
    parts = [summary, "<h3>Clearest pairs (largest score gap)</h3>", *(_pair_card(p, reasons) for p in best)]
    if worst:
        parts += ["<h3>Closest calls (smallest score gap)</h3>", *(_pair_card(p, reasons) for p in worst)]
    return "\n".join(parts)


def _answer_id(meta: Mapping) -> str:
    """A pair side's answer: a recorded answer's id, or a self-play group's record and sample."""
    return meta["id"] if "id" in meta else f"{meta['record']}#{meta['sample']}"


def _pair_card(pair: dict, reasons: Mapping[str, list[RatingRecord]]) -> str:
    def side(kind: str) -> str:
        meta = pair["meta"][kind]
        items = "".join(
            f"<li><b>{esc(r.rater)}</b> "
            f"{esc(fmt(r.rating, 1) if r.ok else 'unparsed')}: {esc(r.reason)}</li>"
            for r in reasons.get(_answer_id(meta), [])
        )
        which = f'version {meta["version"]}' if "version" in meta else f'sample {meta["sample"]}'
        return (f'<div class="{kind}"><b>{kind}</b> {esc(fmt(pair[f"score_{kind}"]))} '
                f'<span class="muted">{esc(meta["agent"])}, round {esc(meta["round"] + 1)}, '
                f'{esc(which)}</span>'
                f'{text_block(pair[kind][0]["content"])}'
                f'<div class="muted">peer reasons</div><ul class="reasons">{items or "<li>none</li>"}</ul></div>')

    gap = pair["score_chosen"] - pair["score_rejected"]
    return (f'<div class="pair"><div><b>{esc(pair["prompt"][-1]["content"])}</b> '
            f'<span class="muted">({esc(pair["source"])}, gap {gap:.2f})</span></div>'
            f'<div class="sides">{side("chosen")}{side("rejected")}</div></div>')


def training_section(report: Report, train_dirs: Sequence[Path]) -> None:
    if not train_dirs:
        report.add("training", "Training", absent("no training directory given (--train DIR)"))
        return
    runs, facts = {}, []
    for directory in train_dirs:
        metrics = directory / "metrics.jsonl"
        if not metrics.is_file():
            raise RunError(f"{directory}: no metrics.jsonl (expected a `socialign train` output directory)")
        label = directory.name if [d.name for d in train_dirs].count(directory.name) == 1 else str(directory)
        runs[label] = read_rows(metrics)
        config = _json_file(directory / "train_config.json") if (directory / "train_config.json").is_file() else {}
        last = runs[label][-1] if runs[label] else {}
        facts.append((label, config.get("method", "-"), config.get("model", "-"), len(runs[label]),
                      last.get("loss", "-")))
    body = table(["run", "method", "model", "steps logged", "last loss"], facts)
    if any(runs.values()):
        body += report.figure("training", figures.training_figure(runs), "training curves")
    report.add("training", "Training", body)


def _json_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def interval(stats: Mapping) -> str:
    """A {mean, low, high, n} statistic (judges.intervals) as one cell; fields that are not numbers are left out."""
    numbers = {key: stats[key] for key in ("mean", "low", "high") if isinstance(stats.get(key), int | float)}
    return f"{shown(numbers, 3)} (n={stats.get('n', '?')})" if "mean" in numbers else "-"


def flatten(data: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested metrics as 'a / b' -> cell text; statistics read as one cell (``interval``)."""
    cells = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "mean" in value:
            cells[name] = interval(value)
        elif isinstance(value, Mapping):
            cells.update(flatten(value, f"{name} / "))
        elif isinstance(value, int | float | str | bool) or value is None:
            cells[name] = "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    return cells


def eval_section(report: Report, eval_path: Path | None) -> None:
    if eval_path is None:
        report.add("eval", "Evaluation", absent("no evaluation given (--eval DIR)"))
        return
    path = eval_path / "eval.json" if eval_path.is_dir() else eval_path
    if not path.is_file():
        raise RunError(f"{eval_path}: no eval.json (expected a `socialign eval --out` directory)")
    data = _json_file(path)
    summary = data.get("summary") if isinstance(data.get("summary"), dict) else {}
    body = "<p>" + esc(", ".join(f"{k}: {v}" for k, v in data.items() if isinstance(v, str | int | float))) + "</p>"
    if summary:
        roles = list(summary)
        cells = {role: flatten({k: v for k, v in summary[role].items() if k != "name"}) for role in roles}
        metrics = list(dict.fromkeys(m for role in roles for m in cells[role]))
        body += table(["metric", *(f"{r}: {summary[r].get('name', '')}" for r in roles)],
                      [(m, *(cells[r].get(m, "-") for r in roles)) for m in metrics])
        scores = {r: summary[r]["scores"] for r in roles if isinstance(summary[r].get("scores"), dict)}
        if scores:
            body += report.figure("eval", figures.eval_figure(scores), "evaluation scores per model")
    headings = {"difference": "model minus baseline, paired by question", "pairwise": "pairwise, both orders"}
    for key, value in data.items():  # every other block of metrics, whatever eval adds
        if key not in ("summary", "per_question") and isinstance(value, dict):
            body += f"<h3>{esc(headings.get(key, key))}</h3>" + table(["metric", "value"], flatten(value).items())
    if isinstance(data.get("sets"), list):
        body += question_sets(data["sets"])
    report.add("eval", "Evaluation", body)


def question_sets(sets: list) -> str:
    """Each further question set's judge-free metrics (the public sets among them): model, baseline
    and the paired difference, one row per set and metric."""
    rows = []
    for entry in sets:
        metrics = entry.get("judge_free", {}).get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            raise RunError("eval.json: sets: expected {name, source, questions, judge_free: {metrics}} per set")
        for metric in metrics.values():
            if not isinstance(metric, dict):
                continue
            cells = [interval(metric[role]) if isinstance(metric.get(role), Mapping) else "-"
                     for role in ("model", "baseline", "difference")]
            rows.append((entry.get("name", "-"), f"{metric.get('label', '-')} ({metric.get('questions', '-')})", *cells))
    headers = ["question set", "metric (questions)", "model", "baseline", "model - baseline, paired"]
    return "<h3>question sets beside the held-out split</h3>" + table(headers, rows)


# -- the whole report -----------------------------------------------------------------------


def build_report(run_dir: str | Path, train_dirs: Sequence[str | Path] = (),
                 eval_path: str | Path | None = None) -> Report:
    store = RunStore.existing(run_dir)
    info = RunInfo.from_manifest(store.manifest(), str(store.root / MANIFEST))
    views = world_views(store, info)
    report = Report(f"socialign run report: {info.manifest.run_id}")
    overview_section(report, info)
    for index, view in enumerate(views[:MAX_WORLDS]):
        several = len(views) > 1
        world_sections(report, view, f"{safe_name(view.name)}-" if several else "",
                       f"{view.name}: " if several else "")
    if len(views) > MAX_WORLDS:
        report.add("more-worlds", "Other worlds",
                   f"<p>{len(views) - MAX_WORLDS} more worlds not drawn: "
                   + esc(", ".join(v.name for v in views[MAX_WORLDS:])) + "</p>")
    for protocol in all_protocols():
        if protocol.report is not None:
            protocol.report(report, store.root)
    training_section(report, [Path(d) for d in train_dirs])
    eval_section(report, Path(eval_path) if eval_path is not None else None)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    report.add("about", "About this report",
               f'<p class="muted">Written {esc(stamp)} from {esc(store.root)} by <code>socialign report</code>. '
               "Self-contained: figures are inline PNG; the page has no script and loads nothing.</p>")
    return report


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "world"


def write_report(run_dir: str | Path, out: str | Path | None = None, train_dirs: Sequence[str | Path] = (),
                 eval_path: str | Path | None = None, png_dir: str | Path | None = None) -> Path:
    """Write the HTML report (default RUN/report.html) and, with ``png_dir``, each figure as PNG."""
    report = build_report(run_dir, train_dirs, eval_path)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, report.html())
    if png_dir is not None:
        png = Path(png_dir)
        png.mkdir(parents=True, exist_ok=True)
        for name, figure in report.figures.items():
            (png / f"{name}.png").write_bytes(figures.png_bytes(figure))
    return path
