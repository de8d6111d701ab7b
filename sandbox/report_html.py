"""The report's page and its pieces: sections, inline figures, escaped tables and text, and the
run's optional record files, for the report and the protocols' own sections alike.

Model text is data: every string passes through ``html.escape``, and the page carries no
script at all, so nothing in an answer can run.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from sandbox import report_figures as figures
from sandbox.errors import RunError

EXAMPLES = 3  # pairs shown at each end, self-play groups, trees
NOT_IN_RUN = "not in this run"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def read_rows(path: Path) -> list[dict]:
    """JSONL rows; a torn last line (a writer still running or killed) is left out."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise RunError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise RunError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def optional_rows(root: Path, name: str) -> list[dict] | None:
    """Rows of a record file in the run directory or any world's directory; None if there is none."""
    paths = [p for p in (root / name, *sorted(root.glob(f"worlds/*/{name}"))) if p.is_file()]
    if not paths:
        return None
    return [row for path in paths for row in read_rows(path)]


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #222; background: #fff; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
nav a { margin-right: 0.8rem; } .muted { color: #666; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.6rem 0; }
.pair { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 0.9rem; margin: 0.8rem 0; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 0.9rem; }
.text { white-space: pre-wrap; word-break: break-word; background: #f8f8f8; padding: 0.45rem;
        border-radius: 4px; font-size: 0.9rem; }
.chosen { border-left: 4px solid #2ca02c; padding-left: 0.5rem; }
.rejected { border-left: 4px solid #d62728; padding-left: 0.5rem; }
ul.reasons { margin: 0.3rem 0; padding-left: 1.2rem; font-size: 0.85rem; }
.absent { color: #888; font-style: italic; }
"""


def table(headers: Sequence[object] | None, rows: Iterable[Sequence[object]]) -> str:
    """An HTML table (no header row without ``headers``); every cell escaped, numbers right-aligned."""
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>" if headers else ""
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{_number(c)}</td>' if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{esc('-' if c is None else c)}</td>"
            for c in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _number(value: float) -> str:
    return esc(f"{value:,}" if isinstance(value, int) else f"{value:.3f}")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def absent(what: str = NOT_IN_RUN) -> str:
    return f'<p class="absent">{esc(what)}</p>'


def text_block(text: str) -> str:
    return f'<div class="text">{esc(text)}</div>'


@dataclass
class Report:
    """The page's sections and its figures (kept as Figures so --png writes the same ones)."""

    title: str
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, heading, body HTML)
    figures: dict[str, Figure] = field(default_factory=dict)

    def add(self, anchor: str, heading: str, body: str) -> None:
        self.sections.append((anchor, heading, body))

    def figure(self, name: str, figure: Figure, alt: str) -> str:
        """Keep ``figure`` under ``name`` and return its inline <img>."""
        self.figures[name] = figure
        return f'<img alt="{esc(alt)}" src="{figures.data_uri(figure)}">'

    def html(self) -> str:
        nav = " ".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in self.sections)
        body = "\n".join(f'<section id="{esc(a)}"><h2>{esc(h)}</h2>\n{b}\n</section>' for a, h, b in self.sections)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(self.title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{esc(self.title)}</h1><nav>{nav}</nav>\n{body}\n</body></html>\n"
        )
