"""The iteration driver of self-play methods: sample with the current iterate, train the next one
against it, evaluate, repeat. SPIN plugs in here (align.spin.SPIN); SPPO and MCTS-DPO plug in
the same way, with their own "make this iteration's data" hook and a registered method that
trains one iteration's data file.

    OUT/train_config.json           the run (method, starting model, data, config), as RunDir keeps it
    OUT/iter-0/eval.json, done.json the starting model's evaluation (the table's first row)
    OUT/iter-t/data.jsonl           iteration t's training data, written whole before training
    OUT/iter-t/model/               iterate t (a RunDir: weights, metrics, checkpoints)
    OUT/iter-t/eval.json            iterate t on the held-out questions
    OUT/iter-t/done.json            written last, atomically: iteration t is complete
    OUT/iterations.jsonl, .md, .png one row per complete iteration, rebuilt from the done files
                                    (an iterate's model path is relative to OUT)

Iteration t trains from iterate t-1 with iterate t-1 as the frozen reference (the trainer
precomputes reference log-probs from the model as loaded, so loading t-1 is all it takes), or
with the initial model as the reference for a method that asks for it (MCTS-DPO). A
killed run resumes (`--resume`) at the first iteration without done.json, reusing its data and
its training checkpoints; a complete iteration is never redone. Every file read back on resume
is user input: a malformed one is a one-line DataError.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from agents.bounded import BoundedInputError, read_json_file
from agents.engine import sampled
from agents.files import write_atomic
from agents.registry import check_model
from align.config import IterationSettings, TrainConfig
from align.errors import DataError
from align.methods import Method, get_method
from align.plots import plot_iterations
from align.progress import progress_bar
from align.rundir import RunDir
from judges.intervals import shown

ITERATION_DIR = re.compile(r"iter-(\d+)")
DONE_FIELDS = ("iteration", "model", "eval", "train")


@dataclass
class IterationContext:
    """What a method's data hook sees: the iteration, the iterate that samples, the method's
    validated input rows and the previous iteration's data rows ([] at iteration 1)."""

    iteration: int
    model: str
    rows: list
    previous: list[dict]
    config: IterationSettings
    data_file: Path | None = None  # the input `rows` were read from
    _backend: object = field(default=None, repr=False)

    def backend(self):
        """The current iterate behind the hf backend, loaded on first use."""
        if self._backend is None:
            from agents.backends.hf import HFBackend

            self._backend = HFBackend(self.model)
        return self._backend

    def generate(self, requests: list) -> list:
        """The current iterate's completions of `requests`, in one batched call under a progress
        bar of its decoding steps."""
        with progress_bar(desc=f"sampling, iteration {self.iteration}", unit="step") as bar:
            return sampled(self.backend(), requests, progress=bar)


# An evaluator: (model to load, directory to write its report in, config, the starting model to
# compare it with or None) -> the report's summary.
Evaluator = Callable[[str, Path, IterationSettings, str | None], dict]
# (metric in the summary, column title, shown as a percentage): the iterations table's columns.
TableMetric = tuple[str, str, bool]


@dataclass(frozen=True)
class IterativeMethod:
    """A self-play method: `method` (registered in align.methods) trains one iteration's data
    file; `locate`/`load` read the user's input and `check(rows, config, path)` (optional) refuses
    what the method cannot use, before any model loads; `make_data` writes iteration t's rows.
    `reference`: the frozen reference of iteration t, iterate t-1 or the initial model (then
    the config's `reference_model` is set to it); `evaluator` and `table` say how each iterate
    is evaluated and which of its metrics the iterations table shows."""

    method: str
    locate: Callable[[str | Path], Path]
    load: Callable[[Path], list]
    make_data: Callable[[IterationContext], list[dict]]
    check: Callable[[list, TrainConfig, Path], None] | None = None
    reference: Literal["previous", "initial"] = "previous"
    evaluator: Evaluator | None = None
    table: tuple[TableMetric, ...] | None = None


@dataclass(frozen=True)
class IterationsResult:
    out_dir: Path
    model_dir: Path  # the last iterate, loadable with AutoModelForCausalLM
    rows: list[dict]  # iterations.jsonl


def run_iterations(
    spec: IterativeMethod,
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: TrainConfig,
    resume: bool = False,
    evaluator: Evaluator | None = None,
) -> IterationsResult:
    """Run `config.iterations` iterations of `spec` from `model` on `data` into `out_dir`."""
    from align.eval import loadable_model  # (heavy imports: only once we run)
    from align.run import run_info, train

    model = loadable_model(model)  # a LoRA training output (e.g. SFT's) starts from its merged model
    method = get_method(spec.method)
    data_file = spec.locate(data)
    rows = spec.load(data_file)
    if spec.check is not None:
        spec.check(rows, config, data_file)
    if config.evaluate and config.pairwise_judge:
        check_model(config.pairwise_judge)  # used after the first training: a typo fails now, not then
    out = Path(out_dir)
    RunDir(out).claim(run_info(method, model, data_file, rows, config), resume)
    done = _completed(out)
    evaluator = (evaluator or spec.evaluator or evaluate_iterate) if config.evaluate else None
    table = spec.table or TABLE_METRICS
    if 0 not in done and evaluator is not None:
        done[0] = _finish(out, 0, model, evaluator, config, train_summary=None, start=model)
    for t in range(1, config.iterations + 1):
        if t in done:
            continue
        current = str(out / done[t - 1]["model"]) if t > 1 else model
        # From iteration 2 on, an initial-model reference differs from the iterate that trains.
        trained = replace(config, reference_model=model) if spec.reference == "initial" and t > 1 else config
        done[t] = _iteration(spec, method, out, t, current, model, data_file, rows, trained, evaluator, train)
        _write_tables(out, done, method, table)
    _write_tables(out, done, method, table)
    return IterationsResult(out, out / done[config.iterations]["model"], [done[t] for t in sorted(done)])


def _iteration(spec, method: Method, out: Path, t: int, current: str, start: str, source: Path, rows, config,
               evaluator, train) -> dict:
    directory = out / f"iter-{t}"
    directory.mkdir(exist_ok=True)
    data_file = directory / "data.jsonl"
    if not data_file.is_file():
        previous_file = out / f"iter-{t - 1}" / "data.jsonl"
        previous = [row.model_dump() for row in method.trainer_class().load(previous_file)] if t > 1 else []
        context = IterationContext(t, current, rows, previous, config, source)
        produced = spec.make_data(context)
        del context  # frees the sampling model before the trainer loads its own copy
        gc.collect()
        write_atomic(data_file, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in produced))
    model_dir = directory / "model"
    resuming = (model_dir / "train_config.json").is_file()
    result = train(method, data_file, current, model_dir, config, resume=resuming)
    last = result.history[-1] if result.history else {}
    summary = {key: last.get(key) for key in method.summary}
    return _finish(out, t, str(result.model_dir.relative_to(out)), evaluator, config, train_summary=summary,
                   start=start)


def _finish(out: Path, t: int, model: str, evaluator, config, train_summary: dict | None, start: str) -> dict:
    """Evaluate iterate t (against the starting model `start` when a win-rate judge is set) and
    mark the iteration complete (done.json is the last file written). An iterate's `model` is
    relative to OUT, so a moved run directory still resumes."""
    directory = out / f"iter-{t}"
    directory.mkdir(exist_ok=True)
    baseline = start if t and config.pairwise_judge else None
    metrics = evaluator(str(out / model) if t else model, directory, config, baseline) if evaluator else None
    row = {"iteration": t, "model": model, "eval": metrics, "train": train_summary}
    write_atomic(directory / "done.json", json.dumps(row, indent=2) + "\n")
    return row


def _completed(out: Path) -> dict[int, dict]:
    """The done.json of every complete iteration, checked: they must be 0..n or 1..n, no gaps."""
    done: dict[int, dict] = {}
    for path in sorted(out.glob("iter-*")):
        match = ITERATION_DIR.fullmatch(path.name)
        if not match or not path.is_dir():
            raise DataError(f"{path}: not an iteration directory (expected iter-N); is {out} an iterations run?")
        marker = path / "done.json"
        if marker.is_file():
            done[int(match.group(1))] = _read_done(marker, int(match.group(1)))
    numbers = sorted(t for t in done if t > 0)
    if numbers != list(range(1, len(numbers) + 1)):
        raise DataError(f"{out}: complete iterations {numbers} leave a gap; the directory was edited by hand")
    return done


def _read_done(path: Path, t: int) -> dict:
    try:
        row = read_json_file(path)
    except BoundedInputError as error:
        raise DataError(str(error)) from None
    if not isinstance(row, dict) or sorted(row) != sorted(DONE_FIELDS) or row["iteration"] != t:
        raise DataError(f"{path}: expected an object with {', '.join(DONE_FIELDS)} for iteration {t}")
    if t > 0 and not (path.parent.parent / str(row["model"]) / "config.json").is_file():
        raise DataError(f"{path}: field 'model' must name iteration {t}'s saved model, found none at {row['model']}")
    return row


# -- evaluation ----------------------------------------------------------------------------------


def evaluate_iterate(model: str, directory: Path, config: IterationSettings, baseline: str | None) -> dict:
    """The judge-free evaluation (align.eval: decline rate, over-decline, similarity to the
    reference, each with its 95% interval) on the scenario's held-out questions or the given
    question file; with a `baseline` (the starting model), also the win rate against it by
    `config.pairwise_judge`, both orders, position bias removed. The full report goes to
    directory/eval.json and eval.md."""
    from align.eval import EvalSettings, evaluate, write_report
    from scenarios import load_scenario

    settings = EvalSettings(
        limit=config.eval_limit,
        max_new_tokens=config.eval_max_new_tokens,
        seed=config.seed,
        questions_file=config.eval_questions,
        judge=False,
        pairwise_judge=config.pairwise_judge if baseline else None,
    )
    report = evaluate(load_scenario(config.eval_scenario), model, baseline, settings=settings)
    write_report(report, directory)
    metrics = report["judge_free"]["metrics"]
    summary = {"questions": report["questions"], "metrics": {name: entry["model"] for name, entry in metrics.items()}}
    if "pairwise" in report:
        pairwise = report["pairwise"]
        summary["win_rate"] = {"judge": report["pairwise_judge"], "baseline": baseline,
                               **{key: pairwise[key] for key in ("n", "win_rate", "tie_rate", "loss_rate",
                                                                 "p_model_better", "judge_first_slot_rate")}}
    return summary


# -- the per-iteration table ---------------------------------------------------------------------

TABLE_METRICS = (("decline_rate", "decline rate", True), ("over_decline_rate", "over-decline", True),
                 ("similarity", "similarity", False))


def _write_tables(out: Path, done: dict[int, dict], method: Method, table: tuple[TableMetric, ...]) -> None:
    rows = [done[t] for t in sorted(done)]
    write_atomic(out / "iterations.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    write_atomic(out / "iterations.md", markdown_table(rows, method.summary, table))
    plot_iterations(rows, out / "iterations.png", table, method.summary)


def markdown_table(rows: list[dict], train_metrics: tuple[str, ...],
                   table: tuple[TableMetric, ...] = TABLE_METRICS) -> str:
    judges = sorted({row["eval"]["win_rate"]["judge"] for row in rows if (row["eval"] or {}).get("win_rate")})
    header = ["iteration", "model", *(label for _, label, _ in table),
              *(["win / tie vs start, P(better)"] if judges else []), *train_metrics]
    evaluated = [row["eval"]["questions"] for row in rows if row["eval"]]
    title = (
        f"Each iterate on {evaluated[0]} held-out questions (judge-free, 95% intervals); "
        "training metrics of the iteration's last step."
        if evaluated
        else "Not evaluated (--no-evaluate); training metrics of each iteration's last step."
    )
    if judges:
        title += (f" Win rate against the starting model judged by `{', '.join(judges)}` (not a reward judge; "
                  "both orders, position bias removed; P(better) ± 95% CI; its first-slot rate in brackets).")
    lines = [title, "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        metrics = (row["eval"] or {}).get("metrics", {})
        cells = [str(row["iteration"]), f"`{row['model']}`"]
        cells += [shown(metrics.get(name), percent=percent) for name, _, percent in table]
        if judges:
            cells.append(_win_rate((row["eval"] or {}).get("win_rate")))
        cells += [_number((row["train"] or {}).get(name)) for name in train_metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _win_rate(entry: dict | None) -> str:
    if not entry or not entry["n"]:
        return "-"
    better = entry["p_model_better"]
    return (f"{entry['win_rate']:.0%} / {entry['tie_rate']:.0%}, {shown(better)} "
            f"(n={entry['n']}) [{entry['judge_first_slot_rate']:.2f}]")


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"
