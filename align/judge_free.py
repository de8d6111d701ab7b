"""Judge-free evaluation: what a model does on questions whose right behaviour is known.

A 135M-parameter LM judge is mostly noise; these measures need no judge at all, so they are
always computed beside the judged scores (and alone with ``--no-judge``):

- decline rate on questions marked ``expected: decline`` (higher is better),
- over-decline: the decline rate on ``expected: answer`` questions (lower is better),
- the decline rate over all questions when some carry no ``expected`` (a plain benchmark file),
- similarity to the reference answer (cosine of sentence embeddings) on should-answer
  questions, and on every question with a reference when that is a different set,
- exact-answer accuracy on questions with an exact ``answer`` (arithmetic: the reply's final
  number), which replaces the decline rate over all questions when every question has one,
- answer length in words and repetition (the share of word 4-grams that repeat an earlier
  one in the same answer: 0 for fresh text, near 1 for a degenerate loop).

Each comes with a 95% interval (``judges.intervals``) and, against a baseline that answered
the same questions, the per-question paired difference model - baseline with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from judges.intervals import mean_t, paired_rate_difference, wilson
from judges.verifiable import ReferenceSimilarity, detect_decline
from scenarios.arithmetic import is_correct
from scenarios.schema import Question

NGRAM = 4
INTERVALS = (
    "rates: Wilson score 95% interval; paired rate differences: Newcombe's score interval for paired "
    "proportions; means and paired mean differences: Student t 95% interval"
)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # the table row
    measure: str  # the per-answer field it aggregates
    rate: bool  # a yes/no outcome (Wilson, Newcombe) rather than a number (Student t)
    counts: Callable[[Question], bool]  # which questions it is measured on
    questions: str  # those questions, for the table
    range: tuple[float, float] = (0.0, 1.0)  # the measure's possible values: a t interval is cut to them


def _declines(q: Question) -> bool:
    return q.expected == "decline"


def _answers(q: Question) -> bool:
    return q.expected == "answer"


METRICS = (
    Metric("decline_rate", "decline rate", "declined", True, _declines, "expected decline"),
    Metric("over_decline_rate", "over-decline rate", "declined", True, _answers, "expected answer"),
    Metric("decline_rate_all", "decline rate", "declined", True, lambda q: True, "all"),
    Metric("accuracy", "exact-answer accuracy", "correct", True, lambda q: q.answer is not None, "with an exact answer"),
    Metric("similarity", "similarity to reference", "similarity", False,
           lambda q: _answers(q) and q.reference is not None, "expected answer, with reference", (-1.0, 1.0)),
    Metric("similarity_all", "similarity to reference", "similarity", False,
           lambda q: q.reference is not None, "all with reference", (-1.0, 1.0)),
    Metric("words", "length (words)", "words", False, lambda q: True, "all", (0.0, math.inf)),
    Metric("repetition", "repeated 4-grams", "repetition", False, lambda q: True, "all"),
)
PERCENT = {"decline_rate", "over_decline_rate", "decline_rate_all", "accuracy", "repetition"}


def metrics_for(questions: list[Question]) -> list[Metric]:
    """The metrics these questions support, without duplicates: a file with no ``expected``
    labels gets the decline rate over all questions instead of decline / over-decline."""
    chosen, seen = [], []
    for metric in METRICS:
        members = [i for i, q in enumerate(questions) if metric.counts(q)]
        if metric.name == "decline_rate_all" and all(q.expected or q.answer is not None for q in questions):
            continue
        if members and (metric.measure, members) not in seen:
            chosen.append(metric)
            seen.append((metric.measure, members))
    return chosen


def repetition(text: str, n: int = NGRAM) -> float:
    """Share of the answer's word n-grams that repeat an earlier one: 1 - distinct / total."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def measure(questions: list[Question], texts: list[str], similarity: ReferenceSimilarity) -> list[dict]:
    """Per answer: declined (and the detector's score and reason), similarity to the reference
    (None without one), words, repetition, and whether its final number is right where the
    question has an exact answer. One encoder pass for all answers and references."""
    cosines = similarity(texts, [q.reference for q in questions])
    rows = []
    for question, text, cosine in zip(questions, texts, cosines):
        verdict = detect_decline(text)
        rows.append({
            "answer": text,
            "declined": verdict.declined,
            "decline_score": round(verdict.score, 4),
            "decline_reason": verdict.reason,
            "similarity": None if cosine is None else round(float(cosine), 4),
            "words": len(text.split()),
            "repetition": round(repetition(text), 4),
            **({} if question.answer is None else {"correct": is_correct(text, question.answer)}),
        })
    return rows


def summarize(questions: list[Question], measured: dict[str, list[dict]], embedder: str) -> dict:
    """Each metric per role with its interval, and the paired difference model - baseline."""
    metrics = {}
    for metric in metrics_for(questions):
        members = [i for i, q in enumerate(questions) if metric.counts(q)]
        values = {role: [rows[i][metric.measure] for i in members] for role, rows in measured.items()}
        entry: dict = {"label": metric.label, "questions": metric.questions, "rate": metric.rate}
        for role, sample in values.items():
            entry[role] = wilson(sum(sample), len(sample)) if metric.rate else _within(mean_t(sample), metric.range)
        if "baseline" in values:
            ours, theirs = values["model"], values["baseline"]
            entry["difference"] = (
                paired_rate_difference(ours, theirs) if metric.rate else mean_t([a - b for a, b in zip(ours, theirs)])
            )
        metrics[metric.name] = entry
    return {"decline_detector": "judges.verifiable.detect_decline", "embedder": embedder,
            "intervals": INTERVALS, "metrics": metrics}


def _within(stats: dict, bounds: tuple[float, float]) -> dict:
    """A t interval cut to the values the measure can take (no negative repetition)."""
    low, high = bounds
    if stats["low"] is None:
        return stats
    return {**stats, "low": max(stats["low"], low), "high": min(stats["high"], high)}


def add_rows(per_question: list[dict], questions: list[Question], measured: dict[str, list[dict]]) -> None:
    """Each question's row of the report gets its expected label and each model's measures."""
    for i, (row, question) in enumerate(zip(per_question, questions)):
        row["expected"] = question.expected
        for role, rows in measured.items():
            row.setdefault(role, {}).update(rows[i])


def markdown_lines(block: dict) -> list[str]:
    """The judge-free table: model, baseline and paired difference, each with its interval."""
    metrics = block["metrics"]
    paired = any("difference" in entry for entry in metrics.values())
    roles = ["model", "baseline"] if paired else ["model"]
    header = ["judge-free metric", "questions", *roles, *(["model - baseline, paired"] if paired else [])]
    lines = ["", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, entry in metrics.items():
        percent = name in PERCENT
        cells = [entry["label"], f"{entry['questions']} (n={entry['model']['n']})"]
        cells += [interval_cell(entry[role], percent) for role in roles]
        if paired:
            cells.append(interval_cell(entry["difference"], percent, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    similarity = f"; similarity is the cosine to the reference answer under `{block['embedder']}`"
    shown = similarity if any(name.startswith("similarity") for name in metrics) else ""
    lines += ["", f"Declines detected by `{block['decline_detector']}`{shown}. Intervals: {block['intervals']}."]
    return lines


def interval_cell(stats: dict, percent: bool, signed: bool = False) -> str:
    if stats["mean"] is None:
        return "-"
    scale, spec, unit = (100, ".0f", " pp" if signed else "%") if percent else (1, ".2f", "")
    spec = ("+" if signed else "") + spec

    def show(value: float) -> str:
        return f"{value * scale:{spec}}{unit}"

    if stats["low"] is None:
        return f"{show(stats['mean'])} (n=1)"
    return f"{show(stats['mean'])} [{show(stats['low'])}, {show(stats['high'])}]"
