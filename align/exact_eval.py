"""Exact-answer accuracy of a model on a scenario's held-out problems (e.g. built-in arithmetic).

The answer is right when the reply's final number (scenarios.arithmetic.final_number) equals
the problem's exact answer: no judge. Greedy replies, one batched call. Accuracy gets Wilson's
95% interval and, for an iterate of a run whose starting model was evaluated (OUT/iter-0),
the paired difference to that base on the same problems (Newcombe's interval, judges.intervals).
"""

from __future__ import annotations

import json
from pathlib import Path

from agents.bounded import BoundedInputError, read_json_file
from agents.files import write_atomic
from align.config import IterationSettings
from align.errors import DataError
from judges.intervals import paired_rate_difference, wilson
from scenarios import Question, load_scenario
from scenarios.arithmetic import final_number, is_correct

EVAL_FILE = "eval.json"
BASE_DIR = "iter-0"
# The iterations table's columns (align.iterate.TableMetric).
ACCURACY_TABLE = (("accuracy", "held-out accuracy", True), ("accuracy_vs_base", "vs base (paired)", True))


def heldout_problems(scenario: str, limit: int | None) -> list[Question]:
    loaded = load_scenario(scenario)
    problems = [q for q in loaded.heldout_questions if q.answer is not None]
    if not problems:
        raise DataError(f"{loaded.path}: no held-out question with an exact `answer` to evaluate on")
    return problems[:limit] if limit else problems


def answer_accuracy(model: str, problems: list[Question], max_new_tokens: int) -> list[dict]:
    """Per problem: the greedy reply, the number read from it, and whether it is the answer."""
    from agents.backends import GenerationRequest
    from agents.backends.hf import HFBackend
    from agents.engine import sampled

    backend = HFBackend(model)
    try:
        requests = [GenerationRequest([{"role": "user", "content": q.text}], temperature=0.0,
                                      max_new_tokens=max_new_tokens) for q in problems]
        replies = [completions[0].text for completions in sampled(backend, requests)]
    finally:
        backend.close()
    return [{"id": q.id, "answer": q.answer, "read": final_number(text), "correct": is_correct(text, q.answer),
             "reply": text} for q, text in zip(problems, replies)]


def _base_outcomes(directory: Path) -> dict[str, bool] | None:
    """The starting model's per-problem outcomes, when this is an iterate of an iterations run."""
    path = directory.parent / BASE_DIR / EVAL_FILE
    if directory.name == BASE_DIR or not path.is_file():
        return None
    try:
        report = read_json_file(path)
        return {row["id"]: bool(row["correct"]) for row in report["problems"]}
    except (BoundedInputError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not an exact-answer evaluation ({error})") from None


def exact_answer_evaluator(model: str, directory: Path, config: IterationSettings, baseline: str | None = None) -> dict:
    """An align.iterate evaluator: accuracy (and vs the base, iteration 0's answers) into
    directory/eval.json; ``baseline`` is unused (MCTS-DPO refuses --pairwise-judge)."""
    problems = heldout_problems(config.eval_scenario, config.eval_limit)
    rows = answer_accuracy(model, problems, config.eval_max_new_tokens)
    outcomes = [row["correct"] for row in rows]
    metrics = {"accuracy": wilson(sum(outcomes), len(outcomes))}
    base = _base_outcomes(directory)
    if base is not None and all(row["id"] in base for row in rows):
        metrics["accuracy_vs_base"] = paired_rate_difference(outcomes, [base[row["id"]] for row in rows])
    report = {"model": model, "scenario": config.eval_scenario, "questions": len(rows), "metrics": metrics,
              "intervals": "accuracy: Wilson 95%; vs base: Newcombe's paired 95% interval", "problems": rows}
    write_atomic(directory / EVAL_FILE, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return {"questions": len(rows), "metrics": metrics}
