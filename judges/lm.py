"""Judging in one place: ratings, the observer panel, and pairwise comparison, as producers.

Every judgment is a producer (agents.engine), so a judge's requests share batched calls with
everything else in flight: peers of several worlds, observers, an evaluation's two models.

- Ratings: G-Eval (the expected rating under the next-token distribution over the scale's
  digits: one forward pass, never a parse failure) or JSON with bounded retries. A rating
  that cannot be read is a failure (``value=None, ok=False``), never a made-up number
  (SANDBOX stored a fake "8").
- The observer panel: memory-less judges scoring answers on the scenario's dimensions, used
  by the simulation and by evaluation, so both read scores the same way.
- Verifiable judges (judges.verifiable): decline-appropriateness against a question's
  ``expected`` and cosine to its ``reference``; their embeddings are one ``Embed`` op, so
  every world's answers of a phase share one encoder pass.
- Pairwise: the judge sees both orders; averaging them removes its position bias, which is
  reported (the rate at which it prefers whatever sits in slot 1; the maths in judges.preference).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents import prompts
from agents.backends import Backend, GenerationRequest, Message, expected_rating
from agents.engine import Embed, Generate, NextToken, Producer, first_completion, gather
from agents.grouping import positions_by
from agents.seeding import derive_seed
from judges.preference import DEFAULT_CRITERION, Preference, first_preferred
from judges.verifiable import JUDGES, Judgement, VerifiableJudges
from scenarios import ObserversConfig, Question
from scenarios.schema import QUESTION_FIELD

# -- ratings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rating:
    value: float | None
    reason: str
    ok: bool
    attempts: int
    raw: str = ""


def scale_values(scale: tuple[int, int]) -> list[int]:
    return list(range(scale[0], scale[1] + 1))


def logprob_ratings(asks: Sequence[tuple[Backend, list[Message]]], scale: tuple[int, int]) -> Producer[list[Rating]]:
    """G-Eval ratings for (judge, prompt) pairs: one next-token read each, all in one step."""
    values = scale_values(scale)
    candidates = tuple(str(v) for v in values)
    distributions = yield [NextToken(backend, tuple(messages), candidates) for backend, messages in asks]
    ratings = []
    for distribution in distributions:
        value = expected_rating(distribution, values)
        ratings.append(Rating(value=value, reason="", ok=value is not None, attempts=1))
    return ratings


def reasoned_ratings(asks: Sequence[tuple[Backend, GenerationRequest]], scale: tuple[int, int]) -> Producer[list[Rating]]:
    """The judge writes its reason (the request), then its rating digit is read after it."""
    outputs = yield [Generate(backend, request) for backend, request in asks]
    reasons = [first_completion(completions).text.strip() for completions in outputs]
    followups = [
        (backend, prompts.rating_followup(list(request.messages), reason, scale))
        for (backend, request), reason in zip(asks, reasons)
    ]
    scores = yield from logprob_ratings(followups, scale)
    return [Rating(s.value, reason, s.ok, s.attempts) for s, reason in zip(scores, reasons)]


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


RequestFor = Callable[[int], GenerationRequest]  # attempt -> the request for that attempt


def json_ratings(asks: Sequence[tuple[Backend, RequestFor]], scale: tuple[int, int],
                 max_retries: int) -> Producer[list[Rating]]:
    """Ask for JSON; re-ask only the unparsed, one step per attempt.

    Always takes ``max_retries + 1`` steps (idle once everything parsed), so worlds rating
    the same way stay in phase and keep sharing calls.
    """
    results: list[Rating | None] = [None] * len(asks)
    pending = list(range(len(asks)))
    last_raw = [""] * len(asks)
    for attempt in range(max_retries + 1):
        outputs = yield [Generate(asks[i][0], asks[i][1](attempt)) for i in pending]
        still = []
        for i, completions in zip(pending, outputs):
            text = first_completion(completions).text
            last_raw[i] = text
            parsed = parse_json_rating(text, scale)
            if parsed is None:
                still.append(i)
            else:
                results[i] = Rating(parsed[0], parsed[1], True, attempt + 1, text)
        pending = still
    for i in pending:
        results[i] = Rating(None, "", False, max_retries + 1, last_raw[i])
    return results


def rating_steps(method: str, max_retries: int) -> int:
    """How many scheduler steps reading one rating takes (reasoned G-Eval: reason, then digit)."""
    return 2 if method == "logprob" else max_retries + 1


# -- observer panel ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ObserverScore:
    observer: int
    dimension: str
    rating: Rating


def score_id(item_id: str, observer: int, dimension: str) -> str:
    """The stable id of one observer's score of one item on one dimension."""
    return f"{item_id}/obs{observer}/{dimension}"


class ObserverPanel:
    def __init__(self, config: ObserversConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.personas = config.personas or [prompts.OBSERVER_PERSONA]

    def score(self, items: Sequence[tuple[str, str]], ids: Sequence[str],
              seed: int) -> Producer[list[list[ObserverScore]]]:
        """For each (question, answer) with a stable id: one score per observer and dimension.

        JSON samples are seeded from ``seed``, the score's id and the attempt.
        """
        as_json = self.config.rating.method == "json"
        work = [
            (item, observer, dimension)
            for item in range(len(items))
            for observer in range(self.config.count)
            for dimension in self.config.dimensions
        ]
        messages = [
            prompts.observer_messages(d.name, d.description, tuple(d.scale), *items[i], as_json,
                                      self.personas[o % len(self.personas)])
            for i, o, d in work
        ]
        # Dimensions on different scales read different digits: each scale is its own part.
        by_scale = positions_by([tuple(d.scale) for _, _, d in work])
        parts = []
        for scale, positions in by_scale.items():
            if as_json:
                asks = [(self.backend, self._json_request(messages[p], seed, score_id(ids[work[p][0]], work[p][1],
                                                                                      work[p][2].name)))
                        for p in positions]
                parts.append(json_ratings(asks, scale, self.config.rating.max_retries))
            else:
                parts.append(logprob_ratings([(self.backend, messages[p]) for p in positions], scale))
        ratings: list[Rating | None] = [None] * len(work)
        for positions, found in zip(by_scale.values(), (yield from gather(parts))):
            for position, rating in zip(positions, found):
                ratings[position] = rating
        per_item: list[list[ObserverScore]] = [[] for _ in items]
        for (item, observer, dimension), rating in zip(work, ratings):
            per_item[item].append(ObserverScore(observer, dimension.name, rating))
        return per_item

    @staticmethod
    def _json_request(messages: list[Message], seed: int, record_id: str) -> RequestFor:
        return lambda attempt: GenerationRequest(
            messages, temperature=0.7, max_new_tokens=24, seed=derive_seed(seed, record_id, "json", attempt)
        )


# -- verifiable judges -------------------------------------------------------------------------


class _Embedded:
    """An encoder stand-in that returns vectors already computed (by one ``Embed`` op)."""

    def __init__(self, vectors: dict[str, object]) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str]):

        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)


def available_judges(questions: Sequence[Question]) -> list[str]:
    """The verifiable judges these questions can feed (a judge needs its field on some question)."""
    return [name for name in JUDGES if any(getattr(q, QUESTION_FIELD[name]) is not None for q in questions)]


def verify(questions: Sequence[Question], answers: Sequence[str], encoder) -> Producer[list[Judgement]]:
    """Every verifiable judge's score of each answer to its question; one embedding step at most.

    A judge whose field a question lacks gives None for it; the decline verdict is always read
    (it is what the export's veto uses wherever ``expected`` is known).
    """
    names = available_judges(questions) or ["decline"]
    vectors: dict[str, object] = {}
    if "reference" in names:
        texts = list(dict.fromkeys([*answers, *(q.reference for q in questions if q.reference is not None)]))
        (embedded,) = yield [Embed(encoder, tuple(texts))]
        vectors = dict(zip(texts, embedded))
    judges = VerifiableJudges({name: 1.0 for name in names}, encoder=_Embedded(vectors))
    return judges.judge_questions(list(questions), list(answers))


# -- pairwise ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairwiseJudge:
    backend: Backend
    criterion: str = DEFAULT_CRITERION
    persona: str = prompts.OBSERVER_PERSONA

    def reads(self, items: Sequence[tuple[str, str, str]]) -> Producer[list[float | None]]:
        """For each (question, first, second) as given: P(the judge picks slot 1), one step."""
        distributions = yield [
            NextToken(self.backend, tuple(prompts.pairwise_messages(q, a, b, self.criterion, self.persona)), ("1", "2"))
            for q, a, b in items
        ]
        return [first_preferred(d) for d in distributions]

    def compare(self, items: Sequence[tuple[str, str, str]]) -> Producer[list[Preference | None]]:
        """For each (question, A, B): the judge's preference read in both orders, one step."""
        probabilities = yield from self.reads([*items, *((q, b, a) for q, a, b in items)])
        forward, backward = probabilities[: len(items)], probabilities[len(items) :]
        return [
            Preference(f, b) if f is not None and b is not None else None for f, b in zip(forward, backward)
        ]
