"""Training data on disk: locate the file, validate every line, report errors as `file:line: field`.

Two kinds of file, both in TRL's conversational formats plus our provenance fields, so the same
file trains with our trainer and with TRL's:
- preference pairs (`trl.DPOTrainer`): {prompt, chosen, rejected, ...}, optionally a per-pair
  `weight` and `label_smoothing`;
- SFT examples (`trl.SFTTrainer`): {prompt, completion} (loss on the completion) or {messages}
  (loss on every assistant turn, like TRL's `assistant_only_loss`).
Validation is strict (no type coercion, no unknown fields) because a silently misread weight or
role corrupts a training run quietly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.bounded import BoundedInputError, parse_json_line
from align.errors import DataError

PAIRS_IN_RUN = Path("export") / "pairs.jsonl"
SFT_IN_RUN = Path("export") / "sft.jsonl"
PROMPTS_IN_RUN = Path("export") / "prompts.jsonl"


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class AssistantMessage(Message):
    role: Literal["assistant"]


def _awaits_reply(prompt: list[Message]) -> list[Message]:
    if prompt[-1].role == "assistant":
        raise ValueError("must end with a user (or system/tool) message, not an assistant message")
    return prompt


Prompt = Annotated[list[Message], Field(min_length=1), AfterValidator(_awaits_reply)]


class PreferencePair(BaseModel):
    """One line of pairs.jsonl: a prompt, a preferred and a dispreferred assistant reply."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    prompt: Prompt
    chosen: list[AssistantMessage] = Field(min_length=1, max_length=1)
    rejected: list[AssistantMessage] = Field(min_length=1, max_length=1)
    score_chosen: float | None = None
    score_rejected: float | None = None
    source: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    # This pair's cDPO flip probability (e.g. a search's uncertainty); None: the config's value.
    label_smoothing: float | None = Field(default=None, ge=0.0, lt=0.5)

    def messages(self, field: Literal["prompt", "chosen", "rejected"]) -> list[dict[str, str]]:
        """Plain dicts, as chat templates expect them."""
        return [message.model_dump() for message in getattr(self, field)]


class SFTExample(BaseModel):
    """One line of sft.jsonl (or a TRL prompt/completion row): the completion is what is learned."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    prompt: Prompt
    completion: list[AssistantMessage] = Field(min_length=1, max_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    def conversation(self) -> tuple[list[dict[str, str]], list[bool]]:
        """All messages as plain dicts, and which of them carry the loss (the completion)."""
        messages = [m.model_dump() for m in (*self.prompt, *self.completion)]
        return messages, [False] * len(self.prompt) + [True]


class SFTConversation(BaseModel):
    """One TRL `messages` row: a whole chat; every assistant turn carries the loss."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    messages: list[Message] = Field(min_length=2)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("messages")
    @classmethod
    def _has_assistant_turn(cls, messages: list[Message]) -> list[Message]:
        if messages[0].role == "assistant":
            raise ValueError("must start with a system or user message, not an assistant message")
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("must hold at least one assistant message (the turns that are learned)")
        return messages

    def conversation(self) -> tuple[list[dict[str, str]], list[bool]]:
        return [m.model_dump() for m in self.messages], [m.role == "assistant" for m in self.messages]


class PromptRow(BaseModel):
    """One line of prompts.jsonl (online methods sample their own completions): a prompt and what
    the verifiable judges read (judges.verifiable): ``expected`` and ``reference``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    prompt: Prompt
    expected: Literal["decline", "answer"] | None = None
    reference: str | None = Field(default=None, min_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_is_a_user_turn(cls, value):
        """A plain-text prompt (TRL's standard format) is one user message."""
        return [{"role": "user", "content": value}] if isinstance(value, str) and value.strip() else value

    def column(self) -> dict:
        """The row as a TRL dataset row (plain dicts; missing judge fields as None)."""
        return {"prompt": [m.model_dump() for m in self.prompt], "expected": self.expected,
                "reference": self.reference}


# What each top-level field must be, in words, for one-line errors.
FIELD_EXPECTATIONS = {
    "prompt": "a non-empty list of messages ({'role', 'content'})",
    "chosen": "a list of one assistant message",
    "rejected": "a list of one assistant message",
    "completion": "a list of one assistant message",
    "messages": "a list of at least two messages ({'role', 'content'})",
    "score_chosen": "a number",
    "score_rejected": "a number",
    "source": "a string",
    "meta": "an object",
    "weight": "a finite number >= 0",
    "expected": "'decline' or 'answer'",
    "reference": "a non-empty string",
    "label_smoothing": "a number in [0, 0.5)",
}


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
