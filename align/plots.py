"""metrics.png: loss, reward margin and reward accuracy per optimizer step, for a glance at a run."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend, no display needed (renders with Agg)

_PANELS = (("loss", "loss"), ("rewards/margin", "reward margin"), ("rewards/accuracy", "reward accuracy"))


def plot_metrics(rows: list[dict], path: str | Path) -> None:
    figure = Figure(figsize=(12, 3.5), layout="constrained")
    steps = [row["step"] for row in rows]
    for axes, (key, title) in zip(figure.subplots(1, len(_PANELS)), _PANELS):
        axes.plot(steps, [row[key] for row in rows], marker="." if len(rows) < 50 else None)
        axes.set_title(title)
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
