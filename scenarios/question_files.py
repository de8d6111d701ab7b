"""Questions from a file the user already has: a bank YAML, JSON lines, or CSV/TSV.

A benchmark file rarely follows our schema, so columns are matched by name, any case: the
prompt is the first of ``prompt``, ``question``, ``text``, ``behavior``; ``expected``
(decline | answer), ``reference``, ``id`` and ``category`` are optional and every other
column is ignored. Every question comes back in the ``heldout`` split: it is being evaluated.
Errors are one ``ScenarioError`` line: ``file:line: field: what was expected``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agents.bounded import BoundedInputError, check_size, read_jsonl
from scenarios.banks import builtin_banks, load_bank
from scenarios.errors import ScenarioError
from scenarios.schema import Question

PROMPT_COLUMNS = ("prompt", "question", "text", "behavior")
EXPECTED_VALUES = ("decline", "answer")
MAX_FILE_BYTES = 64 * 1024 * 1024  # a JSONL or CSV question file; ~100k long prompts
MAX_FIELD_CHARS = 1024 * 1024  # one CSV cell
SUFFIXES = ".yaml, .yml, .jsonl, .csv or .tsv"


def load_questions(name_or_path: str | Path) -> list[Question]:
    """Every question of a bank YAML (or built-in bank name), JSONL or CSV/TSV file, split ``heldout``."""
    path = Path(name_or_path).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml") or (not path.exists() and str(name_or_path) in builtin_banks()):
        questions = load_bank(str(name_or_path)).questions
        return [q.model_copy(update={"split": "heldout"}) for q in questions]
    if not path.exists():
        raise ScenarioError(f"{path}: file not found")
    if path.is_dir():
        raise ScenarioError(f"{path}: is a directory, expected a question file ({SUFFIXES})")
    if suffix not in (".jsonl", ".csv", ".tsv"):
        raise ScenarioError(f"{path}: unknown question file type '{path.suffix}', expected {SUFFIXES}")
    try:
        check_size(path, MAX_FILE_BYTES, "the question file")
        rows = _jsonl_rows(path) if suffix == ".jsonl" else _csv_rows(path, "\t" if suffix == ".tsv" else ",")
        questions = _questions(path, rows)
    except BoundedInputError as error:
        raise ScenarioError(str(error)) from None
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read ({error.strerror or error})") from None
    if not questions:
        raise ScenarioError(f"{path}: no questions: the file is empty (or holds only a header)")
    return questions


def _questions(path: Path, rows: Iterator[tuple[int, dict]]) -> list[Question]:
    questions: list[Question] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        fields = {str(key).strip().lower(): value for key, value in row.items()}
        where = f"{path}:{line}"
        prompt_column = _prompt_column(list(row), where)
        text = _string(fields[prompt_column], where, prompt_column)
        if not text or not text.strip():
            raise ScenarioError(f"{where}: {prompt_column}: empty, expected the question's text")
        question_id = _string(fields.get("id"), where, "id", numbers=True) or f"line-{line}"
        if question_id in first_line:
            raise ScenarioError(f"{where}: id: '{question_id}' is already the id on line {first_line[question_id]}")
        first_line[question_id] = line
        questions.append(
            Question(
                id=question_id,
                text=text,
                category=_string(fields.get("category"), where, "category") or "general",
                split="heldout",
                expected=_expected(fields.get("expected"), where),
                reference=_string(fields.get("reference"), where, "reference") or None,
            )
        )
    return questions


def _prompt_column(keys: list, where: str) -> str:
    names = {str(key).strip().lower() for key in keys}
    column = next((c for c in PROMPT_COLUMNS if c in names), None)
    if column is None:
        found = ", ".join(str(key) for key in keys) or "none"
        raise ScenarioError(
            f"{where}: no prompt column: expected one named {', '.join(PROMPT_COLUMNS[:-1])} or "
            f"{PROMPT_COLUMNS[-1]} (any case); found: {found}"
        )
    return column


def _string(value: object, where: str, field: str, numbers: bool = False) -> str | None:
    """A cell as text; a JSON number is fine for an id, any other non-string is a mistake."""
    if value is None or isinstance(value, str):
        return value.strip() if value is not None else None
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ScenarioError(f"{where}: {field}: expected a string, got {type(value).__name__}")


def _expected(value: object, where: str) -> str | None:
    text = _string(value, where, "expected")
    if not text:
        return None
    if text.lower() not in EXPECTED_VALUES:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ScenarioError(f"{where}: expected: '{shown}' is not one of: decline, answer (any case)")
    return text.lower()


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for line, value in read_jsonl(path):
        if not isinstance(value, dict):
            raise ScenarioError(f"{path}:{line}: expected a JSON object with a prompt field, got {type(value).__name__}")
        yield line, value


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    """Rows as {header: cell}, each with the line its record starts on (quoted cells may span lines)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of the first column
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ScenarioError(f"{path}:{line}: not valid UTF-8 (save the file as UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = last_line = 0
    with _field_limit(MAX_FIELD_CHARS):
        while True:
            start = last_line + 1
            try:
                cells = next(reader, None)
            except csv.Error as error:
                raise ScenarioError(f"{path}:{start}: malformed CSV ({error})") from None
            last_line = reader.line_num
            if cells is None:
                return
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header, header_line = cells, start
                _prompt_column(header, f"{path}:{header_line}")
                continue
            if any(cell.strip() for cell in cells[len(header) :]):
                raise ScenarioError(
                    f"{path}:{start}: {len(cells)} cells, but the header on line {header_line} names {len(header)}"
                )
            yield start, dict(zip(header, cells))


@contextmanager
def _field_limit(limit: int):
    """csv's cell bound is process-wide; set ours for this read only."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)
