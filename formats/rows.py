"""The rows that cross from the simulation to training: one pydantic type per export file,
what the exporter checks every row against before it writes and what the trainers read.

TRL's conversational formats plus our provenance fields, so the same file trains with our
trainer and with TRL's. Validation is strict (no type coercion, no unknown fields) because a
silently misread weight or role corrupts a training run quietly.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


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
    margin: float | None = None  # a self-play pair's win-rate gap
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
    "margin": "a number",
    "source": "a string",
    "meta": "an object",
    "weight": "a finite number >= 0",
    "expected": "'decline' or 'answer'",
    "reference": "a non-empty string",
    "label_smoothing": "a number in [0, 0.5)",
}

SPIN_EXPECTED = {
    **FIELD_EXPECTATIONS,
    "real": "a list of one assistant message",
    "generated": "a list of one assistant message, or null",
}

STEPS_EXPECTED = {
    **FIELD_EXPECTATIONS,
    "prefix": "a string (the reply so far; may be empty)",
    "chosen": "a non-empty string (one step)",
    "rejected": "a non-empty string (one step)",
    "q_chosen": "a finite number",
    "q_rejected": "a finite number",
    "n_chosen": "an integer >= 1 (visits)",
    "n_rejected": "an integer >= 1 (visits)",
}


class SpinRow(BaseModel):
    """One line of spin.jsonl: a training prompt, its real reply and (once sampled) the model's own."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    prompt: Prompt
    real: list[AssistantMessage] = Field(min_length=1, max_length=1)
    generated: list[AssistantMessage] | None = Field(default=None, min_length=1, max_length=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    def prompt_messages(self) -> list[dict[str, str]]:
        return [message.model_dump() for message in self.prompt]


def label_smoothing(n_chosen: int, n_rejected: int, cap: float = 0.5) -> float:
    """Conservative-DPO smoothing from visit counts: a = min(cap, n_rej / (n_chosen + n_rej)).

    A chosen step the search visited far more than the rejected one is a confident preference
    (a near 0); equal visits are as unsure as the cap allows.
    """
    return min(cap, n_rejected / (n_chosen + n_rejected))


class StepRow(BaseModel):
    """One line of steps.jsonl: two sibling steps after the same prompt and reply prefix."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: Prompt
    prefix: str
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    q_chosen: float
    q_rejected: float
    n_chosen: int = Field(ge=1)
    n_rejected: int = Field(ge=1)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _two_steps(self) -> StepRow:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are the same step")
        return self

    @property
    def label_smoothing(self) -> float:
        """How unsure the search was of this pair (``label_smoothing`` of its visit counts)."""
        return label_smoothing(self.n_chosen, self.n_rejected)


# export/<kind>.jsonl -> the type of its rows (files without a trainer reading them have none)
EXPORT_ROWS: dict[str, type[BaseModel]] = {
    "pairs": PreferencePair, "sft": SFTExample, "prompts": PromptRow, "spin": SpinRow, "steps": StepRow,
}
