"""Self-play: an agent samples K answers, judges compare them pairwise, each sample gets a win rate.

The producer ``selfplay_group``: one ``Generate`` with n=K, then every comparison (all
pairs of samples, and each sample against the neighbours' answers) by every LM judge in both
orders, all in one step, so the scheduler batches every group of every agent into one call
per judge model. Verifiable judges (no model but the embedder) score the samples in the same
step, so the phase's embeddings are one encoder call.

Win rates are in-group (against the other K-1 samples): that is P(y beats pi_t) for SPO and
SPPO. Matches against neighbours' answers are kept apart; they rate the agents on the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from agents.backends import Backend, GenerationRequest
from agents.engine import Generate, Producer, gather
from agents.prompts import OBSERVER_PERSONA, answer_messages
from agents.seeding import derive_seed
from judges.lm import PairwiseJudge
from judges.preference import (
    DEFAULT_CRITERION,
    Preference,
    both_orders,
    bradley_terry,
    group_pairs,
    mean_over_opponents,
    preference_matrix,
    vote,
    win_rates,
)
from sandbox.records import RoundRecord, register_kind
from sandbox.world import Agent

# -- the producer -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Judge:
    """An LM judge comparing two answers (judges.lm.PairwiseJudge: P("1") vs P("2"), both orders).

    Judges sharing a name form one panel (a group's neighbours, say): their comparisons are
    averaged per pair and their position bias is reported together.
    """

    name: str
    backend: Backend
    criterion: str = DEFAULT_CRITERION
    persona: str = OBSERVER_PERSONA

    def pairwise(self) -> PairwiseJudge:
        return PairwiseJudge(self.backend, self.criterion, self.persona)


# Judges that need no model (judges.verifiable): all answers of a group -> judge name -> a score
# (or None) per answer, as a producer, so their embeddings are an ``Embed`` op in the judging step
# and every group of the phase shares one encoder pass.
VerifyFn = Callable[[list[str]], Producer[dict[str, list[float | None]]]]


@dataclass(frozen=True)
class Opponent:
    """A neighbour's answer to the same question."""

    agent: str
    answer: str


@dataclass
class SelfPlayGroup:
    question: str
    agent: str
    samples: list[str]
    tokens: list[int]
    win_rates: list[float | None]  # in-group, every judge's comparisons averaged per opponent
    judges: dict[str, list[float | None]]  # judge name -> in-group win rates by that judge alone
    position_bias: dict[str, dict]  # LM judge name -> position_bias(...)
    matches: list[tuple[int, str, float]] = field(default_factory=list)  # (sample, opponent agent, P(sample wins))
    unreadable: int = 0  # LM comparisons with no mass on "1" and "2" in either order


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def _reads(preferences: Sequence[Preference | None]) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward first-slot reads of a judge's preferences (NaN where unreadable)."""
    forward = [math.nan if p is None else p.p_first_forward for p in preferences]
    backward = [math.nan if p is None else p.p_first_backward for p in preferences]
    return np.asarray(forward, dtype=float), np.asarray(backward, dtype=float)


def selfplay_group(
    question: str,
    agent: Agent,
    k: int,
    backend: Backend,
    judges: Sequence[Judge],
    verify: VerifyFn | None = None,
    opponents: Sequence[Opponent] = (),
    seed: int = 0,
    group_id: str = "",
    max_new_tokens: int = 128,
) -> Producer[SelfPlayGroup]:
    """K samples of ``agent``'s answer, compared by every judge; two steps.

    Step 1: one Generate with n=K (all K kept). Step 2: for each LM judge, every pair of
    samples and every (sample, neighbour's answer) in both orders; in the same step ``verify``
    scores the samples and neighbours' answers (its embeddings, if any, one Embed op); a
    verifier's higher score wins, equal scores are ties.
    The request's seed is derive_seed(seed, "selfplay", group_id, agent).
    """
    request = GenerationRequest(
        messages=answer_messages(agent.persona, question, []), prefix=agent.reply_prefix, n=k,
        temperature=agent.sampling.temperature, top_p=agent.sampling.top_p, max_new_tokens=max_new_tokens,
        seed=derive_seed(seed, "selfplay", group_id, agent.id),
    )
    (completions,) = yield [Generate(backend, request)]
    samples = [(agent.reply_prefix + c.text).strip() for c in completions]
    answers = samples + [o.answer for o in opponents]  # players 0..k-1 are samples, then opponents
    first, second = group_pairs(k)
    first = np.concatenate([first, np.repeat(np.arange(k), len(opponents))]).astype(int)
    second = np.concatenate([second, np.tile(np.arange(k, len(answers)), k)]).astype(int)

    items = [(question, answers[a], answers[b]) for a, b in zip(first, second)]
    verifying = [verify(answers)] if verify is not None else []
    judged = yield from gather([judge.pairwise().compare(items) for judge in judges] + verifying)
    verified = judged.pop() if verifying else {}
    panels: dict[str, list[Sequence[Preference | None]]] = {}
    for judge, preferences in zip(judges, judged):
        panels.setdefault(judge.name, []).append(preferences)

    outcomes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # name -> (first, second, P(first wins))
    biases = {}
    for name, members in panels.items():
        forward, backward = (np.concatenate(r) for r in zip(*(_reads(m) for m in members)))
        repeat = len(members)
        p, biases[name] = both_orders(forward, backward)
        outcomes[name] = (np.tile(first, repeat), np.tile(second, repeat), p)
    for name, scores in verified.items():
        outcomes[name] = (first, second, vote(scores, first, second))

    def joined(index: int) -> np.ndarray:
        return np.concatenate([o[index] for o in outcomes.values()]) if outcomes else np.empty(0, dtype=int)

    against = preference_matrix(len(answers), joined(0), joined(1), joined(2))
    in_group = second < k
    matches = [
        (int(a), opponents[b - k].agent, float(against[a, b]))
        for a, b in zip(first[~in_group], second[~in_group])
        if not math.isnan(against[a, b])
    ]
    return SelfPlayGroup(
        question=question,
        agent=agent.id,
        samples=samples,
        tokens=[c.num_tokens for c in completions],
        win_rates=_nullable(mean_over_opponents(against[:k, :k])),
        judges={name: _nullable(win_rates(k, f[s < k], s[s < k], p[s < k])) for name, (f, s, p) in outcomes.items()},
        position_bias=biases,
        matches=matches,
        unreadable=sum(p is None for preferences in judged for p in preferences),
    )


def graph_ratings(groups: Sequence[SelfPlayGroup], prior: float = 1.0) -> dict[str, float | None]:
    """Each agent's Bradley-Terry rating from its samples' matches against neighbours' answers."""
    names = sorted({g.agent for g in groups} | {m[1] for g in groups for m in g.matches})
    index = {name: i for i, name in enumerate(names)}
    first = [index[g.agent] for g in groups for _ in g.matches]
    second = [index[m[1]] for g in groups for m in g.matches]
    outcomes = [m[2] for g in groups for m in g.matches]
    ratings = bradley_terry(len(names), first, second, outcomes, prior=prior)
    return dict(zip(names, _nullable(ratings)))


# -- records ----------------------------------------------------------------------------------


class Match(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sample: int
    opponent: str  # the agent whose answer the sample met
    p_win: float


class SelfPlayRecord(RoundRecord):
    """One agent's group of K samples for one question, and how every judge ranked them."""

    agent: str
    group: str
    question_id: str
    question: str
    samples: list[str]
    tokens: list[int]
    win_rates: list[float | None]  # in-group, all judges
    judges: dict[str, list[float | None]]  # per judge (LM panels by role, verifiers by name)
    position_bias: dict[str, dict]  # per LM judge: n, first_slot_rate, order_dependent
    matches: list[Match]
    unreadable: int
    appropriate: list[bool | None] | None = None  # the verifiers' veto per sample (None: no verifiers)
    expected: str | None = None  # what the question bank says an aligned answer does (decline/answer)
    reference: str | None = None  # the bank's reference answer the similarity judge compared with

    @property
    def failed(self) -> bool:
        return all(w is None for w in self.win_rates)


class RatingsRecord(RoundRecord):
    """Bradley-Terry ratings of the agents (mean 0) from one round's matches over the graph."""

    ratings: dict[str, float | None]
    matches: int
    method: str = "bradley-terry"


register_kind("selfplay", SelfPlayRecord)
register_kind("selfplay_ratings", RatingsRecord)


def record_of(group: SelfPlayGroup, record_id: str, round_index: int, phase: str, agent_group: str,
              question_id: str, **optional) -> SelfPlayRecord:
    """The group as a record; ``optional`` fields (appropriate, expected, reference) are set only if not None."""
    extra = {name: value for name, value in optional.items() if value is not None}
    return SelfPlayRecord(
        id=record_id, round=round_index, phase=phase, agent=group.agent, group=agent_group, question_id=question_id,
        question=group.question, samples=group.samples, tokens=group.tokens, win_rates=group.win_rates,
        judges=group.judges, position_bias=group.position_bias,
        matches=[Match(sample=s, opponent=o, p_win=p) for s, o, p in group.matches], unreadable=group.unreadable,
        **extra,
    )


# -- export rows (called by sandbox.world_export) ---------------------------------------------------


def _round(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 4) for v in values]


def _order(record: SelfPlayRecord) -> list[int]:
    """Samples best first by win rate (unrated last), ties by sample index."""
    return sorted(range(len(record.samples)),
                  key=lambda i: (record.win_rates[i] is None, -(record.win_rates[i] or 0.0), i))


def _meta(record: SelfPlayRecord) -> dict:
    return {"record": record.id, "round": record.round, "agent": record.agent, "group": record.group,
            "question_id": record.question_id, "source": "selfplay"}


def _sample_meta(record: SelfPlayRecord, sample: int) -> dict:
    """One sample's provenance, shaped like an answer's in the other pairs (sandbox.world_export)."""
    return {"record": record.id, "sample": sample, "round": record.round, "agent": record.agent,
            "group": record.group, "question_id": record.question_id}


def ranked_rows(records: Sequence[SelfPlayRecord]) -> list[dict]:
    """One row per group: the K samples best first; ``scores`` and ``win_rates`` are the all-judge
    in-group win rates, ``judges`` each judge's, in the same order."""
    rows = []
    for record in records:
        order = _order(record)
        rates = _round([record.win_rates[i] for i in order])
        rows.append({
            "prompt": [{"role": "user", "content": record.question}],
            "responses": [[{"role": "assistant", "content": record.samples[i]}] for i in order],
            "scores": rates,
            "win_rates": rates,
            "judges": {name: _round([values[i] for i in order]) for name, values in record.judges.items()},
            "meta": {**_meta(record), "samples": order, "position_bias": record.position_bias},
        })
    return rows


def pair_of(record: SelfPlayRecord, margin: float) -> tuple[int, int, float] | None:
    """(chosen, rejected, margin) of a group: the best sample the verifiers do not veto (never one
    that complies with a should-decline question or declines a should-answer one) against the
    worst sample; None without a spread of more than ``margin``."""
    vetoed = record.appropriate or [None] * len(record.samples)
    eligible = [w if vetoed[i] is not False else None for i, w in enumerate(record.win_rates)]
    if all(w is None for w in eligible):
        return None
    chosen = max((i for i, w in enumerate(eligible) if w is not None), key=lambda i: eligible[i])
    rejected = min((i for i, w in enumerate(record.win_rates) if w is not None), key=lambda i: record.win_rates[i])
    gap = record.win_rates[chosen] - record.win_rates[rejected]
    if gap <= margin or record.samples[chosen] == record.samples[rejected]:
        return None
    return chosen, rejected, gap


def pair_rows(records: Sequence[SelfPlayRecord], margin: float) -> list[dict]:
    """Best vs worst sample per group, with the margin (the two samples' win-rate difference)."""
    rows = []
    for record in records:
        found = pair_of(record, margin)
        if found is None:
            continue
        chosen, rejected, gap = found
        rows.append({
            "prompt": [{"role": "user", "content": record.question}],
            "chosen": [{"role": "assistant", "content": record.samples[chosen]}],
            "rejected": [{"role": "assistant", "content": record.samples[rejected]}],
            "score_chosen": round(record.win_rates[chosen], 4),
            "score_rejected": round(record.win_rates[rejected], 4),
            "margin": round(gap, 4),
            "source": "selfplay",
            "meta": {**_meta(record), "chosen": _sample_meta(record, chosen), "rejected": _sample_meta(record, rejected),
                     "dimension": "win_rate"},
        })
    return rows


def prompt_rows(records: Sequence[SelfPlayRecord]) -> list[dict]:
    """Each self-play question once, with what the verifiable judges need (SPO's prompts)."""
    seen: dict[str, dict] = {}
    for record in records:
        seen.setdefault(record.question_id, {
            "prompt": [{"role": "user", "content": record.question}],
            **{name: getattr(record, name) for name in ("expected", "reference") if getattr(record, name)},
            "meta": {"question_id": record.question_id},
        })
    return [seen[key] for key in sorted(seen)]
