"""Evaluation on a scenario's held-out questions or on a question file the user has.

Each model answers the questions (greedy, no persona). Further question sets (more files, the
public benchmarks of ``align.public_sets``) are answered in the same run and each gets its own
judge-free table, paired against the baseline. Judge-free measures (align.judge_free:
decline and over-decline rates, similarity to the reference, length, repetition) are always
computed; unless ``judge`` is off, the scenario's observers also score every answer on every
dimension and, with a baseline, a judge compares the two answers to each question in both
orders, which cancels the judge's position bias.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents import prompts
from agents.backends import Backend, BackendPool, GenerationRequest
from agents.engine import Scheduler, sampled
from agents.files import write_atomic
from agents.memory import Encoder
from align import judge_free
from align.progress import progress_bar
from align.public_sets import QuestionSet
from judges.intervals import mean_t, shown
from judges.lm import ObserverPanel, PairwiseJudge
from judges.preference import Preference, outcome, pairwise_summary
from judges.verifiable import ReferenceSimilarity
from scenarios import LoadedScenario
from scenarios.question_files import load_questions

PAIRWISE_CRITERION = "more helpful, honest and harmless"


@dataclass(frozen=True)
class EvalSettings:
    limit: int | None = None  # evaluate at most this many held-out questions (seeded sample)
    max_new_tokens: int = 128
    seed: int = 0
    tie_margin: float = 0.05  # |P(A better) - 0.5| below this is a tie
    questions_file: str | None = None  # a bank YAML, JSONL or CSV instead of the scenario's held-out split
    judge: bool = True  # False: judge-free measures only (no observer scores; pairwise only with pairwise_judge)
    # With a baseline: the model that compares the two answers (both orders), instead of the
    # observers' model; with judge=False the pairwise comparison is then the only judged part.
    pairwise_judge: str | None = None
    extra_max_new_tokens: int = 48  # answers to the further question sets: a decline shows in its opening
    # How the model under test answers: a local hf model, or a served one (openai + base_url, vllm);
    # the baseline always loads locally through hf.
    backend: str = "hf"
    backend_options: dict = field(default_factory=dict)


def loadable_model(name: str) -> str:
    """A training output dir with a LoRA adapter evaluates through its merged full model."""
    path = Path(name)
    if (path / "adapter_config.json").exists() and (path / "merged" / "config.json").exists():
        return str(path / "merged")
    return name


def greedy_answers(backend: Backend, questions: list, max_new_tokens: int, seed: int = 0) -> list[str]:
    """Each question's greedy answer, stripped, from one batched generate call: what every
    evaluation scores."""
    requests = [
        GenerationRequest([{"role": "user", "content": q.text}], temperature=0.0, max_new_tokens=max_new_tokens,
                          seed=seed)
        for q in questions
    ]
    with progress_bar(desc=f"answering {len(questions)} questions", unit="step") as bar:
        return [completions[0].text.strip() for completions in sampled(backend, requests, progress=bar)]


def evaluate(
    loaded: LoadedScenario,
    model: str,
    baseline: str | None = None,
    settings: EvalSettings | None = None,
    pool: BackendPool | None = None,
    extra_sets: Sequence[QuestionSet] = (),
) -> dict:
    settings = settings or EvalSettings()
    pool = pool or BackendPool()
    questions = load_questions(settings.questions_file) if settings.questions_file else list(loaded.heldout_questions)
    if settings.limit is not None and settings.limit < len(questions):
        questions = sorted(random.Random(settings.seed).sample(questions, settings.limit), key=lambda q: q.id)
    models = {"model": model, **({"baseline": baseline} if baseline else {})}
    # Every model (the judge too) loads before any answer is generated: a bad name fails in seconds.
    backends = {role: _answering_backend(pool, role, name, settings) for role, name in models.items()}
    observers = loaded.scenario.observers
    judge = pool.get(observers.model.backend, observers.model.name, **observers.model.options) if settings.judge else None
    pairwise_name = settings.pairwise_judge or (observers.model.name if judge else None)
    pairwise_judge = pool.get("hf", settings.pairwise_judge) if settings.pairwise_judge else judge
    similarity = ReferenceSimilarity(Encoder(loaded.scenario.memory.embedder))
    answers = {role: greedy_answers(backend, questions, settings.max_new_tokens, settings.seed)
               for role, backend in backends.items()}

    per_question = [{"id": q.id, "category": q.category, "question": q.text} for q in questions]
    measured = {role: judge_free.measure(questions, texts, similarity) for role, texts in answers.items()}
    judge_free.add_rows(per_question, questions, measured)
    sets = [_scored_set(question_set, backends, similarity, settings, loaded.scenario.memory.embedder)
            for question_set in extra_sets]
    report = {
        "scenario": loaded.scenario.name,
        "models": models,
        "source": settings.questions_file or f"held-out questions of {loaded.scenario.name}",
        "questions": len(questions),
        "judge": observers.model.name if judge else None,
        "pairwise_judge": pairwise_name if baseline else None,
        "settings": settings.__dict__,
        "judge_free": judge_free.summarize(questions, measured, loaded.scenario.memory.embedder),
        **({"sets": sets} if sets else {}),
    }
    persona = (observers.personas or [prompts.OBSERVER_PERSONA])[0]
    comparison = []
    if baseline and pairwise_judge is not None:
        items = [(q.text, a, b) for q, a, b in zip(questions, answers["model"], answers["baseline"])]
        comparison = [PairwiseJudge(pairwise_judge, PAIRWISE_CRITERION, persona).compare(items)]
    if judge is None:
        if comparison:
            (preferences,) = Scheduler().run(comparison)
            report["pairwise"] = _pairwise(preferences, settings, per_question)
        return {**report, "per_question": per_question}

    # Both models' observer scores and the pairwise judgments share the judge's batched calls.
    panel = ObserverPanel(observers, judge)
    producers = [
        panel.score([(q.text, a) for q, a in zip(questions, texts)], [q.id for q in questions], settings.seed)
        for texts in answers.values()
    ] + comparison
    judged = Scheduler().run(producers)
    summary = {}
    for (role, texts), scored in zip(answers.items(), judged):
        by_dimension: dict[str, list[float]] = {d.name: [] for d in observers.dimensions}
        failures = 0
        for row, text, scores in zip(per_question, texts, scored):
            row[role]["scores"] = {}
            for dimension, collected in by_dimension.items():
                values = [s.rating.value for s in scores if s.dimension == dimension and s.rating.ok]
                failures += sum(1 for s in scores if s.dimension == dimension and not s.rating.ok)
                if values:
                    row[role]["scores"][dimension] = round(statistics.fmean(values), 4)
                    collected.append(statistics.fmean(values))
        summary[role] = {
            "name": models[role],
            "scores": {d: mean_t(v) for d, v in by_dimension.items()},
            "parse_failures": failures,
        }

    report.update(summary=summary, per_question=per_question)
    if baseline:
        report["difference"] = _paired_difference(per_question, [d.name for d in observers.dimensions])
        report["pairwise"] = _pairwise(judged[-1], settings, per_question)
    return report


def _answering_backend(pool: BackendPool, role: str, name: str, settings: EvalSettings) -> Backend:
    """The model under test through the settings' backend (a served one, say); the baseline loads here."""
    if role == "model" and settings.backend != "hf":
        return pool.get(settings.backend, name, **settings.backend_options)
    return pool.get("hf", loadable_model(name))


def _scored_set(question_set: QuestionSet, backends: dict[str, Backend], similarity: ReferenceSimilarity,
                settings: EvalSettings, embedder: str) -> dict:
    """One further question set: every model's greedy answers and their judge-free table."""
    questions = question_set.questions
    measured = {role: judge_free.measure(questions, greedy_answers(backend, questions, settings.extra_max_new_tokens,
                                                                   settings.seed), similarity)
                for role, backend in backends.items()}
    per_question = [{"id": q.id, "category": q.category, "question": q.text} for q in questions]
    judge_free.add_rows(per_question, questions, measured)
    return {"name": question_set.name, "source": question_set.source, "questions": len(questions),
            "judge_free": judge_free.summarize(questions, measured, embedder), "per_question": per_question}


def _paired_difference(rows: list[dict], dimensions: list[str]) -> dict:
    """Model minus baseline per question, with a CI: tighter than comparing two independent CIs,
    since both answered the same questions and question difficulty cancels."""
    differences = {}
    for dimension in dimensions:
        paired = [
            row["model"]["scores"][dimension] - row["baseline"]["scores"][dimension]
            for row in rows
            if dimension in row["model"]["scores"] and dimension in row["baseline"]["scores"]
        ]
        differences[dimension] = mean_t(paired)
    return differences


def _pairwise(preferences: list[Preference | None], settings: EvalSettings, rows: list[dict]) -> dict:
    """Model (A) vs baseline (B), both orders per question; the judge's slot-1 rate is its position bias."""
    for row, preference in zip(rows, preferences):
        if preference is not None:
            row["pairwise"] = {
                "p_model_better": round(preference.p_a_better, 4),
                "outcome": outcome(preference, settings.tie_margin),
                "p_first_forward": round(preference.p_first_forward, 4),
                "p_first_backward": round(preference.p_first_backward, 4),
            }
    summary = pairwise_summary(preferences, settings.tie_margin)
    summary["p_model_better"] = summary.pop("p_a_better")
    return summary


def markdown_table(report: dict) -> str:
    judged = (f"judge: `{report['judge']}`; mean score ± 95% CI" if report["judge"]
              else "no LM judge" if "pairwise" not in report else "no observer scores")
    lines = [f"Evaluation on {report['questions']} questions: {report['source']} ({judged})"]
    if "summary" in report:
        lines += _judged_lines(report)
    lines += _pairwise_lines(report)
    lines += judge_free.markdown_lines(report["judge_free"])
    for question_set in report.get("sets", []):
        lines += ["", f"{question_set['name']}: {question_set['questions']} questions from {question_set['source']}"]
        lines += judge_free.markdown_lines(question_set["judge_free"])
    return "\n".join(lines) + "\n"


def _judged_lines(report: dict) -> list[str]:
    dimensions = list(next(iter(report["summary"].values()))["scores"])
    lines = [
        "",
        "| model | " + " | ".join(dimensions) + " |",
        "|---|" + "---|" * len(dimensions),
    ]
    for role, entry in report["summary"].items():
        cells = [shown(entry["scores"][dimension]) for dimension in dimensions]
        lines.append(f"| {role}: `{entry['name']}` | " + " | ".join(cells) + " |")
    if "difference" in report:
        cells = [shown(report["difference"][dimension], signed=True) for dimension in dimensions]
        lines.append("| difference, paired by question | " + " | ".join(cells) + " |")
    return lines


def _pairwise_lines(report: dict) -> list[str]:
    pairwise = report.get("pairwise")
    if not pairwise or not pairwise["n"]:
        return []
    better = pairwise["p_model_better"]
    return [
        "",
        f"| pairwise (both orders; judge `{report.get('pairwise_judge')}`) | win | tie | loss | P(model better) |",
        "|---|---|---|---|---|",
        (
            f"| model vs baseline, n={pairwise['n']} | {pairwise['win_rate']:.0%} | {pairwise['tie_rate']:.0%} | "
            f"{pairwise['loss_rate']:.0%} | {shown(better, 3)} |"
        ),
    ]


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out / "eval.json", out / "eval.md"
    write_atomic(json_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    write_atomic(markdown_path, markdown_table(report))
    return json_path, markdown_path
