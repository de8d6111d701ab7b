"""The one batched generation interface every backend implements.

Callers gather all prompts of a simulation phase into a single ``generate`` call; a backend
is free to split that batch internally (by token budget, by sampling settings) but never
forces the caller to loop per agent.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Literal

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt and how to sample ``n`` completions for it.

    ``prefix`` starts the assistant's reply: the completion continues it (rendered by
    ``agents.chat.ChatRenderer.prompt_text``, no new turn opened). Sample ``k`` is seeded
    ``agents.seeding.sample_seed(seed, k)``. ``logprobs`` asks for the log-prob of every sampled
    token under the model's own distribution (before temperature and top_p).
    """

    messages: tuple[Message, ...] | list[Message]
    prefix: str = ""
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One sample, raw: callers that want clean text strip it themselves.

    ``text`` follows the prefix and is cut before the stop string; ``token_ids`` are the generated
    ids without EOS, up to and including the token that completed the stop string (so the stop
    string's tokens are there, later ones are not); ``logprobs`` (when requested) align with them.
    ``finish_reason``: "eos" the model ended its turn, "stop" a stop string (``stop_string`` says
    which), "length" the token budget ran out.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    stop_string: str | None = None
    logprobs: tuple[float, ...] | None = None
    generated: int | None = None  # a server's own count (``usage``), when it reports one

    @property
    def num_tokens(self) -> int:
        """Tokens the backend generated (the EOS counts), for throughput stats."""
        if self.generated is not None:
            return self.generated
        return len(self.token_ids) + (1 if self.finish_reason == "eos" else 0)


@dataclass
class BackendStats:
    """Counters a run reports in its manifest (tokens/s is generated / seconds)."""

    calls: int = 0
    requests: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


class Backend(abc.ABC):
    """Batched chat generation and scoring over one loaded model."""

    model_name: str
    # Whether generate() takes ``progress``, a bar it advances once per decoding step.
    steps_progress: bool = False

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abc.abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Return, per request, its ``n`` completions (in request order)."""

    @abc.abstractmethod
    def score(
        self,
        prompts: list[list[Message]],
        continuations: list[str],
        prefixes: list[str] | None = None,
        end_of_turn: bool = True,
    ) -> list[list[float]]:
        """Per-token log-probs of each continuation as the assistant's reply (after its prefix).

        Tokens come from ``ChatRenderer.split``: with ``end_of_turn`` the template's end-of-turn
        tokens are scored too — exactly the tokens the trainer trains on, so the sum equals the
        trainer's policy log-prob of the same pair.
        """

    @abc.abstractmethod
    def next_token_logprobs(
        self, prompts: list[list[Message]], candidates: list[str], prefix: str = ""
    ) -> list[dict[str, float]]:
        """Log-probs of each candidate (a short string, e.g. a digit) as the next token.

        The assistant reply is started with ``prefix``; candidates absent from what the
        backend can report get ``-inf``. One forward pass per prompt: this is how judges read
        a rating from the distribution instead of parsing free text.
        """

    def close(self) -> None:
        """Release engines, sessions or servers (no-op by default)."""


def expected_rating(logprobs: dict[str, float], scale: list[int]) -> float | None:
    """Probability-weighted mean of the scale (G-Eval); None if no scale token has mass."""
    weights = {v: math.exp(logprobs.get(str(v), -math.inf)) for v in scale}
    total = sum(weights.values())
    if total <= 0:
        return None
    return sum(v * w for v, w in weights.items()) / total


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, str | None]:
    """Cut ``text`` before the earliest stop string (the longest on a tie); return the rest and
    which string cut it (None when none occurs)."""
    found = [(text.find(s), -len(s), s) for s in stop if s and s in text]
    if not found:
        return text, None
    index, _, string = min(found)
    return text[:index], string


class BackendUnavailable(RuntimeError):
    """A backend cannot serve: an optional dependency, server or option is missing, or the server
    refuses the request (the message says what to fix). The CLI reports it in one line."""


def one_line(text: object, limit: int = 300) -> str:
    """An error text squeezed onto one line, for one-line error messages."""
    return " ".join(str(text).split())[:limit]
