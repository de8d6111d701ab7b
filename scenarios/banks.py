"""Question banks, and reading YAML into the schema with errors that name file, field and line.

The scenario loader (scenarios.loader) and the question-file reader (scenarios.question_files)
both read banks through here, so neither imports the other's module for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agents.bounded import MAX_YAML_BYTES, BoundedInputError, check_size, load_yaml
from scenarios.errors import ScenarioError
from scenarios.schema import QuestionBank

BANK_DIR = Path(__file__).parent / "questions"

Model = TypeVar("Model", bound=BaseModel)


def builtin_banks() -> list[str]:
    return sorted(p.stem for p in BANK_DIR.glob("*.yaml"))


def line_numbers(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every field path in a composed YAML tree to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            lines.update(line_numbers(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            lines.update(line_numbers(value, (*path, index)))
    return lines


def read_yaml(path: Path) -> tuple[str, object, dict[tuple, int]]:
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
    return text, data, line_numbers(node) if node is not None else {}


def validate(model: type[Model], data: object, path: Path, lines: dict[tuple, int]) -> Model:
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
    path = locate(name_or_path, BANK_DIR, relative_to, "question bank", builtin_banks())
    _, data, lines = read_yaml(path)
    return validate(QuestionBank, data, path, lines)


def locate(name_or_path: str, builtin_dir: Path, relative_to: Path | None, what: str, names: list[str]) -> Path:
    builtin = builtin_dir / f"{name_or_path}.yaml"
    if builtin.exists() and "/" not in name_or_path:
        return builtin
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.exists():
        raise ScenarioError(f"{name_or_path}: no such {what} file, and not a built-in one ({', '.join(names)})")
    return path
