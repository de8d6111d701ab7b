"""Load scenarios and question banks from YAML, by path or built-in name.

Errors name the file, the field path and its line, e.g.
``quick.yaml:12: agents.0.count: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.bounded import MAX_YAML_BYTES, BoundedInputError, check_size, load_yaml
from scenarios.arithmetic import Difficulty, problems
from scenarios.errors import ScenarioError
from scenarios.schema import ArithmeticQuestions, Question, QuestionBank, Scenario

PACKAGE_DIR = Path(__file__).parent
BUILTIN_DIR = PACKAGE_DIR / "builtin"
BANK_DIR = PACKAGE_DIR / "questions"

Model = TypeVar("Model", bound=BaseModel)


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def builtin_banks() -> list[str]:
    return sorted(p.stem for p in BANK_DIR.glob("*.yaml"))


def _line_numbers(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every field path in a composed YAML tree to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines.update(_line_numbers(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines.update(_line_numbers(value, (*path, index)))
    return lines


def _read_yaml(path: Path) -> tuple[str, object, dict[tuple, int]]:
    try:
        check_size(path, MAX_YAML_BYTES, "the YAML file")
        text = path.read_text(encoding="utf-8")
    except BoundedInputError as error:
        raise ScenarioError(str(error)) from None
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read ({error})") from None
    try:
        data, node = load_yaml(path, text)
    except BoundedInputError as error:
        raise ScenarioError(str(error)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(f"{path}{where}: malformed YAML: {problem}") from None
    return text, data, _line_numbers(node) if node is not None else {}


def _validate(model: type[Model], data: object, path: Path, lines: dict[tuple, int]) -> Model:
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        location = tuple(first["loc"])
        # The nearest enclosing field that exists in the file tells the line.
        line = next((lines[location[:n]] for n in range(len(location), -1, -1) if location[:n] in lines), None)
        field = ".".join(str(part) for part in location) or "(top level)"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        elif first["type"] == "value_error":  # our validators' own words, without pydantic's prefix
            message = str(first["ctx"]["error"])
        where = f":{line}" if line else ""
        raise ScenarioError(f"{path}{where}: {field}: {message}") from None


def load_bank(name_or_path: str, relative_to: Path | None = None) -> QuestionBank:
    path = _locate(name_or_path, BANK_DIR, relative_to, "question bank", builtin_banks())
    _, data, lines = _read_yaml(path)
    return _validate(QuestionBank, data, path, lines)


def _locate(name_or_path: str, builtin_dir: Path, relative_to: Path | None, what: str, names: list[str]) -> Path:
    builtin = builtin_dir / f"{name_or_path}.yaml"
    if builtin.exists() and "/" not in name_or_path:
        return builtin
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.exists():
        raise ScenarioError(f"{name_or_path}: no such {what} file, and not a built-in one ({', '.join(names)})")
    return path


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
    path = _locate(str(name_or_path), BUILTIN_DIR, None, "scenario", builtin_scenarios())
    text, data, lines = _read_yaml(path)
    scenario = _validate(Scenario, data, path, lines)
    questions = list(scenario.questions.inline)
    digest = hashlib.sha256(text.encode())
    if scenario.questions.bank:
        try:
            bank = load_bank(scenario.questions.bank, relative_to=path.parent)
        except ScenarioError as error:
            line = lines.get(("questions", "bank"))
            raise ScenarioError(f"{path}:{line}: questions.bank: {error}") from None
        questions += bank.questions
        digest.update(yaml.safe_dump(bank.model_dump(), sort_keys=True).encode())
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
