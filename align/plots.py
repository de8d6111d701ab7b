"""metrics.png (a method's chosen metrics per optimizer step) and iterations.png (per iteration of a
self-play run), for a glance at a run."""

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


def plot_iterations(
    rows: list[dict], path: str | Path, evaluated: Sequence[tuple[str, str, bool]], trained: Sequence[str]
) -> None:
    """iterations.png: each evaluated metric (with its 95% interval as error bars) and each training
    metric of the last step, per iteration; a metric no row has is skipped."""
    panels = []
    for name, title, _ in evaluated:
        points = [(r["iteration"], ((r["eval"] or {}).get("metrics") or {}).get(name)) for r in rows]
        points = [(t, s) for t, s in points if s and s.get("mean") is not None]
        if points:
            panels.append((title, points))
    for name in trained:
        points = [(r["iteration"], {"mean": (r["train"] or {}).get(name)}) for r in rows]
        points = [(t, s) for t, s in points if s["mean"] is not None]
        if points:
            panels.append((f"{name} (last step)", points))
    figure = Figure(figsize=(4 * max(len(panels), 1), 3.5), layout="constrained")
    for axes, (title, points) in zip(figure.subplots(1, max(len(panels), 1), squeeze=False)[0], panels):
        x = [t for t, _ in points]
        y = [s["mean"] for _, s in points]
        low = [s["mean"] - s["low"] if s.get("low") is not None else 0 for _, s in points]
        high = [s["high"] - s["mean"] if s.get("high") is not None else 0 for _, s in points]
        axes.errorbar(x, y, yerr=[low, high], marker="o", capsize=3)
        axes.set_title(title)
        axes.set_xlabel("iteration")
        axes.set_xticks(x)
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
