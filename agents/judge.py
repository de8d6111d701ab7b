"""Read ratings from models: from the next-token distribution, or from JSON with bounded retries.

A rating that cannot be read is recorded as a failure (``value=None, ok=False``) — never a
made-up number (SANDBOX stored a fake "8" on parse failures).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from agents.backends import Backend, GenerationRequest, Message, expected_rating


@dataclass(frozen=True)
class Rating:
    value: float | None
    reason: str
    ok: bool
    attempts: int
    raw: str = ""


def scale_values(scale: tuple[int, int]) -> list[int]:
    return list(range(scale[0], scale[1] + 1))


def ratings_from_logprobs(backend: Backend, prompts: list[list[Message]], scale: tuple[int, int]) -> list[Rating]:
    """G-Eval: the probability-weighted mean rating, one forward pass per prompt, all batched."""
    values = scale_values(scale)
    distributions = backend.next_token_logprobs(prompts, [str(v) for v in values]) if prompts else []
    ratings = []
    for distribution in distributions:
        value = expected_rating(distribution, values)
        ratings.append(Rating(value=value, reason="", ok=value is not None, attempts=1))
    return ratings


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_RATING_FIELD = re.compile(r'"?rating"?\s*[:=]\s*"?(\d+(?:\.\d+)?)')


def parse_json_rating(text: str, scale: tuple[int, int]) -> tuple[float, str] | None:
    """Extract (rating, reason) from a model's JSON-ish reply; None if absent or off the scale."""
    rating, reason = None, ""
    for candidate in _JSON_OBJECT.findall(text):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "rating" in data:
            try:
                rating = float(data["rating"])
            except (TypeError, ValueError):
                continue
            reason = str(data.get("reason", "")).strip()
            break
    if rating is None:
        match = _RATING_FIELD.search(text)
        if match:
            rating = float(match.group(1))
    if rating is None or not scale[0] <= rating <= scale[1]:
        return None
    return rating, reason


def ratings_from_json(
    backend: Backend,
    prompts: list[list[Message]],
    scale: tuple[int, int],
    request_for: Callable[[int, list[Message], int], GenerationRequest],
    max_retries: int,
) -> list[Rating]:
    """Ask for JSON; re-ask only the unparsed prompts, each retry one batched call."""
    results: list[Rating | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    last_raw = [""] * len(prompts)
    for attempt in range(max_retries + 1):
        if not pending:
            break
        outputs = backend.generate([request_for(i, prompts[i], attempt) for i in pending])
        still = []
        for i, (completion,) in zip(pending, outputs):
            last_raw[i] = completion.text
            parsed = parse_json_rating(completion.text, scale)
            if parsed is None:
                still.append(i)
            else:
                results[i] = Rating(parsed[0], parsed[1], True, attempt + 1, completion.text)
        pending = still
    for i in pending:
        results[i] = Rating(None, "", False, max_retries + 1, last_raw[i])
    return [r for r in results if r is not None]


def first_preferred_probability(backend: Backend, prompts: list[list[Message]]) -> list[float | None]:
    """P(the judge answers "1") renormalised over {"1", "2"}; None if neither has mass."""
    distributions = backend.next_token_logprobs(prompts, ["1", "2"]) if prompts else []
    probabilities = []
    for distribution in distributions:
        one, two = (math.exp(distribution.get(c, -math.inf)) for c in ("1", "2"))
        probabilities.append(one / (one + two) if one + two > 0 else None)
    return probabilities
