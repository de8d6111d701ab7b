"""metrics.png: a method's chosen metrics per optimizer step, for a glance at a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed (renders with Agg)


def plot_metrics(rows: list[dict], path: str | Path, panels: Sequence[tuple[str, str]]) -> None:
    """One panel per (metric key, title); a metric absent from the rows is skipped."""
    panels = [(key, title) for key, title in panels if any(key in row for row in rows)]
    figure = Figure(figsize=(4 * len(panels), 3.5), layout="constrained")
    for axes, (key, title) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        steps = [row["step"] for row in rows if key in row]
        axes.plot(steps, [row[key] for row in rows if key in row], marker="." if len(rows) < 50 else None)
        axes.set_title(title)
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
