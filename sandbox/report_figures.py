"""The run report's figures: pure functions from plain numbers to matplotlib Figures.

No pyplot (no global backend, no display): each function builds a ``Figure`` that renders
with Agg, so the same object becomes an inline PNG in the HTML report or a file for
``--png``. Model text never reaches a figure; labels are agent ids, group and judge names.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from itertools import cycle

import networkx as nx
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MAX_LAYOUT_NODES = 1000  # above this a layout is slow and unreadable: a histogram instead
MAX_NODE_LABELS = 40
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")
_DASHES = ("-", "--", ":", "-.")


def group_colours(groups: Sequence[str]) -> dict[str, str]:
    """A colour per group in the scenario's order, passed to every figure so a group keeps its colour."""
    return dict(zip(dict.fromkeys(groups), cycle(_COLOURS)))


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def data_uri(figure: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(figure)).decode("ascii")


def graph_figure(graph: nx.Graph, scores: Mapping[int, float], labels: Mapping[int, str],
                 groups: Mapping[int, str], colours: Mapping[str, str], dimension: str,
                 scale: tuple[int, int]) -> Figure:
    """The world's graph, each agent's node coloured by its mean observer score (over the run's
    range of agents' means, so the colour bar reads the values), ringed by group.

    Graphs too large to lay out readably show the distribution of agents' scores per group.
    """
    figure = Figure(figsize=(7.5, 6), layout="constrained")
    axes = figure.subplots()
    if graph.number_of_nodes() > MAX_LAYOUT_NODES:
        for group, colour in colours.items():
            values = [scores[n] for n in graph if groups.get(n) == group and n in scores]
            axes.hist(values, bins=20, range=scale, alpha=0.6, color=colour, label=group)
        axes.set_xlabel(f"agent's mean observer {dimension}")
        axes.set_ylabel("agents")
        axes.set_title(f"{graph.number_of_nodes():,} agents (too many to draw the graph)")
        axes.legend()
        return figure
    position = nx.spring_layout(graph, seed=0) if graph.number_of_edges() else nx.circular_layout(graph)
    nodes = sorted(graph)
    axes.add_collection(LineCollection([(position[a], position[b]) for a, b in graph.edges],
                                       colors="#999999", linewidths=0.8, zorder=1))
    unscored = [n for n in nodes if n not in scores]
    if unscored:
        axes.scatter([position[n][0] for n in unscored], [position[n][1] for n in unscored], s=260,
                     c="#dddddd", edgecolors=[colours[groups[n]] for n in unscored], linewidths=2.5, zorder=2)
    scored = [n for n in nodes if n in scores]
    values = [scores[n] for n in scored] or [float(scale[0])]
    low, high = min(values), max(values)  # the run's own range: small differences stay visible
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    points = axes.scatter([position[n][0] for n in scored], [position[n][1] for n in scored], s=260,
                          c=[scores[n] for n in scored], cmap="viridis", vmin=low, vmax=high,
                          edgecolors=[colours[groups[n]] for n in scored], linewidths=2.5, zorder=2)
    figure.colorbar(points, ax=axes, label=f"mean observer {dimension}")
    if len(nodes) <= MAX_NODE_LABELS:
        for n in nodes:
            axes.annotate(labels[n], position[n], textcoords="offset points", xytext=(0, 12), ha="center",
                          fontsize=7)
    axes.legend(handles=[Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgewidth=2.5,
                                markeredgecolor=c, markersize=10, label=g) for g, c in colours.items()],
                title="group (ring)", loc="best", fontsize=8)
    axes.set_title(f"agents on the graph ({len(nodes)} agents, {graph.number_of_edges()} edges)")
    axes.set_axis_off()
    axes.autoscale_view()
    axes.margins(0.12)
    return figure


def trajectories_figure(peer: Mapping[str, Mapping[int, Mapping[int, float]]],
                        observer: Mapping[str, Mapping[str, Mapping[int, float]]],
                        colours: Mapping[str, str], dimension: str, scale: tuple[int, int]) -> Figure:
    """Per group and round: mean peer rating received (one line per answer version) and mean
    observer score of drafts and final answers.

    ``peer[group][version][round]`` and ``observer[group][kind][round]`` (kind: draft | final).
    """
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    for group, versions in peer.items():
        for version, by_round in sorted(versions.items()):
            rounds = sorted(by_round)
            left.plot([r + 1 for r in rounds], [by_round[r] for r in rounds], marker="o",
                      linestyle=_DASHES[min(version, len(_DASHES) - 1)], color=colours[group],
                      label=f"{group} {'draft' if version == 0 else f'revision {version}'}")
    for group, kinds in observer.items():
        for index, kind in enumerate(("draft", "final")):
            by_round = kinds.get(kind, {})
            rounds = sorted(by_round)
            right.plot([r + 1 for r in rounds], [by_round[r] for r in rounds], marker="os"[index],
                       linestyle=_DASHES[index], color=colours[group], label=f"{group} {kind}")
    for axes, title in ((left, "mean peer rating received"), (right, f"mean observer {dimension}")):
        axes.set_title(title)
        axes.set_xlabel("round")
        axes.set_ylim(scale[0] - 0.2, scale[1] + 0.2)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, ncol=2)
    return figure


def revision_figure(points: Sequence[tuple[str, float, float]], means: Mapping[str, tuple[float, float]],
                    colours: Mapping[str, str], dimension: str, scale: tuple[int, int]) -> Figure:
    """Observer score before vs after revision: each revised answer (draft, final) by group,
    and each group's mean draft and final score."""
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    scatter, bars = figure.subplots(1, 2)
    scatter.plot(scale, scale, color="#999999", linewidth=1, label="no change")
    for group, colour in colours.items():
        mine = [(d, f) for g, d, f in points if g == group]
        if mine:
            scatter.scatter([d for d, _ in mine], [f for _, f in mine], color=colour, label=group, alpha=0.8)
    scatter.set_xlim(scale[0] - 0.2, scale[1] + 0.2)
    scatter.set_ylim(scale[0] - 0.2, scale[1] + 0.2)
    scatter.set_xlabel(f"draft {dimension}")
    scatter.set_ylabel(f"revised {dimension}")
    scatter.set_title(f"revised answers ({len(points)})")
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=8)
    groups = list(means)
    width = 0.38
    for offset, index, label in ((-width / 2, 0, "draft"), (width / 2, 1, "final")):
        bars.bar([i + offset for i in range(len(groups))], [means[g][index] for g in groups], width,
                 color=[colours[g] for g in groups], alpha=0.5 if index == 0 else 1.0,
                 hatch="//" if index == 0 else None, edgecolor="black", label=label)
    bars.set_xticks(range(len(groups)), groups)
    bars.set_ylim(scale[0], scale[1])
    bars.set_ylabel(f"mean observer {dimension}")
    bars.set_title("every answer: draft vs final, per group")
    bars.legend(fontsize=8)
    return figure


def win_rate_figure(win_rates: Mapping[str, Sequence[float]]) -> Figure:
    """Self-play: the spread of in-group win rates of each agent's samples."""
    names = list(win_rates)
    figure = Figure(figsize=(max(6.0, 0.6 * len(names) + 2), 4), layout="constrained")
    axes = figure.subplots()
    axes.boxplot([list(win_rates[n]) for n in names], tick_labels=names)
    axes.axhline(0.5, color="#999999", linewidth=1)
    axes.set_ylim(-0.05, 1.05)
    axes.set_ylabel("in-group win rate of a sample")
    axes.set_title("self-play win rates per agent")
    axes.tick_params(axis="x", labelrotation=45 if len(names) > 8 else 0)
    return figure


def trees_figure(trees: Mapping[str, Sequence[Mapping]]) -> Figure:
    """Search trees: depth down, leaves left to right, node size by visits, colour by value.

    Each node: ``id``, ``parent`` (None at the root), ``visits``, ``value``.
    """
    figure = Figure(figsize=(5 * len(trees), 4.5), layout="constrained")
    all_axes = figure.subplots(1, len(trees), squeeze=False)[0]
    values = [n["value"] for nodes in trees.values() for n in nodes if n.get("value") is not None]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    for axes, (name, nodes) in zip(all_axes, trees.items()):
        position = tree_layout(nodes)
        by_id = {n["id"]: n for n in nodes}
        axes.add_collection(LineCollection(
            [(position[n["id"]], position[n["parent"]]) for n in nodes if n.get("parent") in position],
            colors="#999999", linewidths=0.8, zorder=1))
        visits = [max(by_id[i].get("visits") or 0, 0) for i in position]
        top = max(visits) or 1
        points = axes.scatter([p[0] for p in position.values()], [p[1] for p in position.values()],
                              s=[20 + 280 * math.sqrt(v / top) for v in visits],
                              c=[by_id[i].get("value") if by_id[i].get("value") is not None else math.nan
                                 for i in position],
                              cmap="viridis", vmin=low, vmax=high if high > low else low + 1, zorder=2)
        axes.set_title(f"{name} ({len(nodes)} nodes)", fontsize=9)
        axes.set_axis_off()
        axes.autoscale_view()
        axes.margins(0.08)
    figure.colorbar(points, ax=list(all_axes), label="value (Q)")
    return figure


def tree_layout(nodes: Sequence[Mapping]) -> dict[str, tuple[float, float]]:
    """(x, y) per node reachable from a root: leaves at consecutive x in depth-first order, a parent
    centred over its children, y = -depth."""
    children: dict[object, list[str]] = {}
    for node in nodes:
        children.setdefault(node.get("parent"), []).append(node["id"])
    position: dict[str, tuple[float, float]] = {}
    next_leaf = 0.0

    def place(node_id: str, depth: int) -> float:
        nonlocal next_leaf
        if node_id in position:  # a cycle or a repeated id: place once
            return position[node_id][0]
        position[node_id] = (next_leaf, -depth)
        kids = children.get(node_id, [])
        if not kids:
            next_leaf += 1
            return position[node_id][0]
        xs = [place(kid, depth + 1) for kid in kids]
        position[node_id] = ((xs[0] + xs[-1]) / 2, -depth)
        return position[node_id][0]

    ids = {n["id"] for n in nodes}
    for root in [n["id"] for n in nodes if n.get("parent") is None or n.get("parent") not in ids]:
        place(root, 0)
    return position


def training_figure(runs: Mapping[str, Sequence[Mapping]], max_panels: int = 6) -> Figure:
    """Training curves: one panel per logged metric (loss and rewards first), one line per run."""
    preferred = ("loss", "rewards/margin", "rewards/accuracy")
    keys = {key for rows in runs.values() for row in rows for key, value in row.items()
            if key not in ("step", "epoch") and isinstance(value, int | float) and not isinstance(value, bool)}
    ordered = [k for k in preferred if k in keys] + sorted(keys - set(preferred))
    ordered = ordered[:max_panels]
    columns = min(3, len(ordered)) or 1
    rows_count = math.ceil(len(ordered) / columns) or 1
    figure = Figure(figsize=(4.2 * columns, 3.3 * rows_count), layout="constrained")
    panels = figure.subplots(rows_count, columns, squeeze=False).flatten()
    for axes, key in zip(panels, ordered):
        for label, rows in runs.items():
            points = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), int | float)]
            axes.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 50 else None,
                      label=label)
        axes.set_title(key)
        axes.set_xlabel("optimizer step")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if len(runs) > 1:
            axes.legend(fontsize=7)
    for axes in panels[len(ordered):]:
        axes.set_axis_off()
    return figure


def eval_figure(summary: Mapping[str, Mapping[str, Mapping]]) -> Figure:
    """Evaluation: mean score per dimension for each evaluated model, with 95% CI bars.

    ``summary[role][dimension] = {"mean", "low", "high"}`` (judges.intervals)."""
    roles = list(summary)
    dimensions = list(dict.fromkeys(d for role in roles for d in summary[role]))
    figure = Figure(figsize=(max(5.0, 1.6 * len(dimensions) + 2), 3.8), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / max(len(roles), 1)
    for index, role in enumerate(roles):
        stats = [summary[role].get(d) or {} for d in dimensions]
        means = [s.get("mean") or 0.0 for s in stats]
        below = [m - s["low"] if s.get("low") is not None else 0.0 for m, s in zip(means, stats)]
        above = [s["high"] - m if s.get("high") is not None else 0.0 for m, s in zip(means, stats)]
        axes.bar([i + (index - (len(roles) - 1) / 2) * width for i in range(len(dimensions))],
                 means, width, yerr=[below, above],
                 capsize=4, color=_COLOURS[index % len(_COLOURS)], label=role)
    axes.set_xticks(range(len(dimensions)), dimensions)
    axes.set_ylabel("mean score (95% CI)")
    axes.set_title("evaluation on held-out questions")
    axes.legend(fontsize=8)
    return figure
