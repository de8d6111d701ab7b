"""Load scenarios from YAML, by path or built-in name, with their questions (scenarios.banks).

Errors name the file, the field path and its line, e.g.
``quick.yaml:12: agents.0.count: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from scenarios.arithmetic import Difficulty, problems
from scenarios.banks import load_bank, locate, read_yaml, validate
from scenarios.errors import ScenarioError
from scenarios.question_files import load_questions
from scenarios.schema import ArithmeticQuestions, Question, Scenario

PACKAGE_DIR = Path(__file__).parent
BUILTIN_DIR = PACKAGE_DIR / "builtin"


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


QUESTION_FILE_SUFFIXES = (".jsonl", ".csv", ".tsv")


def _bank_questions(bank: str, relative_to: Path) -> tuple[list[Question], object]:
    """A bank YAML (or built-in name) with its own splits, or a question file `eval` reads (JSONL,
    CSV, TSV), so a user's file needs no conversion: all of its questions are training questions.
    Also what the scenario's sha256 covers (for a bank YAML, the whole bank)."""
    path = Path(bank).expanduser()
    if path.suffix.lower() not in QUESTION_FILE_SUFFIXES:
        loaded = load_bank(bank, relative_to)
        return list(loaded.questions), loaded.model_dump()
    questions = [question.model_copy(update={"split": "train"})
                 for question in load_questions(path if path.is_absolute() else relative_to / path)]
    return questions, [question.model_dump() for question in questions]


def arithmetic_questions(config: ArithmeticQuestions) -> list[Question]:
    """The generated problems of both splits as questions: the text is the whole prompt (with its
    worked example), the exact answer is what the outcome verifier checks."""
    difficulty = Difficulty(config.operations, config.max_number, config.multiply)
    made = [p for split, count in (("train", config.train), ("heldout", config.heldout))
            for p in (problems(split, count, difficulty, config.seed) if count else [])]
    return [Question(id=p.id, text=p.messages()[0]["content"], category="arithmetic", split=p.split, answer=p.answer)
            for p in made]


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its questions and files resolved."""

    scenario: Scenario
    path: Path
    sha256: str  # of the scenario text and its question bank, for the run manifest
    train_questions: tuple[Question, ...]
    heldout_questions: tuple[Question, ...]
    graph_file: Path | None


def load_scenario(name_or_path: str | Path) -> LoadedScenario:
    path = locate(str(name_or_path), BUILTIN_DIR, None, "scenario", builtin_scenarios())
    text, data, lines = read_yaml(path)
    scenario = validate(Scenario, data, path, lines)
    questions = list(scenario.questions.inline)
    digest = hashlib.sha256(text.encode())
    if scenario.questions.bank:
        try:
            banked, identity = _bank_questions(scenario.questions.bank, path.parent)
        except ScenarioError as error:
            line = lines.get(("questions", "bank"))
            raise ScenarioError(f"{path}:{line}: questions.bank: {error}") from None
        questions += banked
        digest.update(yaml.safe_dump(identity, sort_keys=True).encode())
    if scenario.questions.arithmetic:
        try:
            generated = arithmetic_questions(scenario.questions.arithmetic)
        except ValueError as error:  # a difficulty too small for the counts asked
            raise ScenarioError(f"{path}:{lines.get(('questions', 'arithmetic'))}: questions.arithmetic: {error}") from None
        questions += generated
        digest.update(yaml.safe_dump([q.model_dump() for q in generated], sort_keys=True).encode())
    if scenario.questions.categories:
        wanted = set(scenario.questions.categories)
        questions = [q for q in questions if q.category in wanted]
    train = tuple(q for q in questions if q.split == "train")
    heldout = tuple(q for q in questions if q.split == "heldout")
    if not train:
        line = lines.get(("questions",))
        raise ScenarioError(f"{path}:{line}: questions: no training questions left after filtering")
    if scenario.mcts and scenario.mcts.value == "answer" and not any(q.answer is not None for q in train):
        raise ScenarioError(f"{path}:{lines.get(('mcts', 'value'), lines.get(('mcts',)))}: mcts.value: 'answer' needs "
                            "questions with an exact `answer` (e.g. questions.arithmetic); use 'judges'")
    try:
        scenario.judges.resolved(list(train))
    except ValueError as error:
        raise ScenarioError(f"{path}:{lines.get(('judges', 'weights'), lines.get(('judges',)))}: judges.weights: {error}") from None
    graph_file = None
    if scenario.graph.file:
        graph_file = Path(scenario.graph.file).expanduser()
        if not graph_file.is_absolute():
            graph_file = path.parent / graph_file
    return LoadedScenario(scenario, path, digest.hexdigest(), train, heldout, graph_file)
