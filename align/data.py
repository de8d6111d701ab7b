"""Training data on disk: locate the file, validate every line against its type (formats.rows),
report errors as `file:line: field`.

- preference pairs (`trl.DPOTrainer`): {prompt, chosen, rejected, ...}, optionally a per-pair
  `weight` and `label_smoothing`;
- SFT examples (`trl.SFTTrainer`): {prompt, completion} (loss on the completion) or {messages}
  (loss on every assistant turn, like TRL's `assistant_only_loss`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from agents.bounded import BoundedInputError, parse_json_line
from align.errors import DataError
from formats.rows import FIELD_EXPECTATIONS, PreferencePair, PromptRow, SFTConversation, SFTExample

PAIRS_IN_RUN = Path("export") / "pairs.jsonl"
SFT_IN_RUN = Path("export") / "sft.jsonl"
PROMPTS_IN_RUN = Path("export") / "prompts.jsonl"


def locate_pairs(data: str | Path) -> Path:
    """`data` is a pairs JSONL file or a simulation run directory (then its export/pairs.jsonl)."""
    return locate_data(data, PAIRS_IN_RUN, "pairs")


def locate_sft(data: str | Path) -> Path:
    """`data` is an SFT JSONL file or a simulation run directory (then its export/sft.jsonl)."""
    return locate_data(data, SFT_IN_RUN, "SFT")


def locate_prompts(data: str | Path) -> Path:
    """`data` is a prompts JSONL file or a simulation run directory (then its export/prompts.jsonl)."""
    return locate_data(data, PROMPTS_IN_RUN, "prompts")


def load_prompts(path: str | Path) -> list[PromptRow]:
    return load_rows(path, lambda record: PromptRow, "prompts")


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Every non-blank line validated; the first bad one raises DataError naming file:line and field."""
    return load_rows(path, lambda record: PreferencePair, "preference pairs")


def load_sft(path: str | Path) -> list[SFTExample | SFTConversation]:
    """Like load_pairs; a line with `messages` is a whole conversation, else a prompt/completion row."""
    return load_rows(path, lambda record: SFTConversation if "messages" in record else SFTExample, "SFT examples")


def locate_data(data: str | Path, in_run: Path, what: str) -> Path:
    path = Path(data)
    if path.is_dir():
        found = path / in_run
        if not found.is_file():
            raise DataError(f"{path}: run directory has no {in_run}; run `socialign export {path}` first")
        return found
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file or run directory")
    return path


def load_rows(path: str | Path, schema, what: str, expected: dict[str, str] | None = None) -> list:
    """`schema(record)` is the model of one line; `expected` words each top-level field for errors."""
    path = Path(path)
    rows = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                rows.append(_parse_line(raw, f"{path}:{number}", schema, expected or FIELD_EXPECTATIONS))
    if not rows:
        raise DataError(f"{path}: holds no {what}")
    return rows


def _parse_line(raw: bytes, where: str, schema, expected: dict[str, str]) -> BaseModel:
    try:
        record = parse_json_line(raw, where)  # bounded: size, nesting and numbers are checked first
    except BoundedInputError as error:
        raise DataError(str(error)) from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: each line must be a JSON object")
    try:
        return schema(record).model_validate(record)
    except ValidationError as error:
        raise DataError(f"{where}: {_describe(error.errors()[0], expected)}") from None


def _describe(error: dict, expected: dict[str, str]) -> str:
    loc = error["loc"]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] == "missing":
        return f"field '{path}' is missing"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{path}' (extra information belongs in 'meta')"
    if len(loc) == 1 and error["type"] != "value_error":
        return f"field '{path}' must be {expected[loc[0]]}"
    detail = error["msg"].removeprefix("Value error, ")
    return f"field '{path}' {detail[0].lower()}{detail[1:]}"
