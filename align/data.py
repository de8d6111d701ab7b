"""Preference pairs on disk: locate the file, validate every line, report errors as `file:line: field`.

The format is TRL's conversational preference format plus our provenance fields, so the same
file trains with our trainer and with `trl.DPOTrainer`. Validation is strict (no type coercion,
no unknown fields) because a silently misread weight or role corrupts a training run quietly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from align.errors import DataError

PAIRS_IN_RUN = Path("export") / "pairs.jsonl"


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class AssistantMessage(Message):
    role: Literal["assistant"]


class PreferencePair(BaseModel):
    """One line of pairs.jsonl: a prompt, a preferred and a dispreferred assistant reply."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    prompt: list[Message] = Field(min_length=1)
    chosen: list[AssistantMessage] = Field(min_length=1)
    rejected: list[AssistantMessage] = Field(min_length=1)
    score_chosen: float | None = None
    score_rejected: float | None = None
    source: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)

    @field_validator("prompt")
    @classmethod
    def _prompt_awaits_reply(cls, prompt: list[Message]) -> list[Message]:
        if prompt[-1].role == "assistant":
            raise ValueError("must end with a user (or system/tool) message, not an assistant message")
        return prompt

    def messages(self, field: Literal["prompt", "chosen", "rejected"]) -> list[dict[str, str]]:
        """Plain dicts, as chat templates expect them."""
        return [message.model_dump() for message in getattr(self, field)]


# What each top-level field must be, in words, for one-line errors.
_EXPECTED = {
    "prompt": "a non-empty list of messages ({'role', 'content'})",
    "chosen": "a non-empty list of assistant messages",
    "rejected": "a non-empty list of assistant messages",
    "score_chosen": "a number",
    "score_rejected": "a number",
    "source": "a string",
    "meta": "an object",
    "weight": "a finite number >= 0",
}


def locate_pairs(data: str | Path) -> Path:
    """`data` is a pairs JSONL file or a simulation run directory (then its export/pairs.jsonl)."""
    path = Path(data)
    if path.is_dir():
        pairs = path / PAIRS_IN_RUN
        if not pairs.is_file():
            raise DataError(
                f"{path}: run directory has no {PAIRS_IN_RUN}; run `socialign export {path}` first"
            )
        return pairs
    if not path.is_file():
        raise DataError(f"{path}: no such pairs file or run directory")
    return path


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Every non-blank line validated; the first bad one raises DataError naming file:line and field."""
    path = Path(path)
    pairs = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                pairs.append(_parse_line(raw, f"{path}:{number}"))
    if not pairs:
        raise DataError(f"{path}: holds no preference pairs")
    return pairs


def _parse_line(raw: bytes, where: str) -> PreferencePair:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{where}: not valid UTF-8") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: each line must be a JSON object")
    try:
        return PreferencePair.model_validate(record)
    except ValidationError as error:
        raise DataError(f"{where}: {_describe(error.errors()[0])}") from None


def _describe(error: dict) -> str:
    loc = error["loc"]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] == "missing":
        return f"field '{path}' is missing"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{path}' (extra information belongs in 'meta')"
    if len(loc) == 1 and error["type"] != "value_error":
        return f"field '{path}' must be {_EXPECTED[loc[0]]}"
    detail = error["msg"].removeprefix("Value error, ")
    return f"field '{path}' {detail[0].lower()}{detail[1:]}"
