"""The one batched generation interface every backend implements.

Callers gather all prompts of a simulation phase into a single ``generate`` call; a backend
is free to split that batch internally (by token budget, by sampling settings) but never
forces the caller to loop per agent.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt and how to sample ``n`` completions for it."""

    messages: tuple[Message, ...] | list[Message]
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


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

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abc.abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Return, per request, its ``n`` completions (in request order)."""

    @abc.abstractmethod
    def score(self, prompts: list[list[Message]], continuations: list[str]) -> list[list[float]]:
        """Per-token log-probs of each continuation as the assistant's reply to its prompt."""

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


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; report whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class BackendUnavailable(RuntimeError):
    """A backend cannot serve: an optional dependency, server or option is missing, or the server
    refuses the request (the message says what to fix). The CLI reports it in one line."""


def one_line(text: object, limit: int = 300) -> str:
    """An error text squeezed onto one line, for one-line error messages."""
    return " ".join(str(text).split())[:limit]
