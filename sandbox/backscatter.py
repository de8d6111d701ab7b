"""Back-Scatter rounds as producers: no backend call in here, only requests and their results.

draft → peers rate (reason, then rating) → revise while the mean peer rating is under the
stopping threshold (up to ``max_revisions``) → observers score every version on every
dimension, and in the same step the verifiable judges (decline-appropriateness, similarity
to the reference) give their verdicts → the final answers go to the agents' memories.

Each phase is a step (sandbox.context): a pure function of earlier records and seeds derived
from record ids, which is what lets a killed run resume to exactly the records of an
uninterrupted one. Memory is derived state: replaying a round re-adds its final answers.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from functools import partial

from pydantic import BaseModel, ConfigDict

from agents import prompts
from agents.backends import Completion, GenerationRequest, Message
from agents.engine import Generate, Producer, first_completion, gather, immediate
from agents.memory import MemoryItem
from judges.lm import (
    ObserverPanel,
    Rating,
    json_ratings,
    rating_steps,
    reasoned_ratings,
    score_id,
    verify,
)
from sandbox.context import RunContext
from sandbox.protocol import ROUND_END, Protocol
from sandbox.records import Phase, RoundRecord, Step, register_kind
from sandbox.selfplay_phase import SELFPLAY, selfplay_step
from sandbox.world import Agent

DRAFT = Phase("draft")
OBSERVE = Phase("observe")


def rate_phase(version: int) -> Phase:
    return Phase("rate", version)


def revise_phase(version: int) -> Phase:
    return Phase("revise", version)


def answer_phase(version: int) -> Phase:
    return DRAFT if version == 0 else revise_phase(version)


# -- record kinds ---------------------------------------------------------------------------


class Recalled(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str
    answer: str
    similarity: float


class AnswerRecord(RoundRecord):
    agent: str
    group: str
    question_id: str
    question: str
    version: int
    text: str
    tokens: int
    finish_reason: str
    memories: list[Recalled] | None = None  # drafts: what the agent recalled
    revised_from_rating: float | None = None  # revisions: the mean peer rating that prompted it


class RatingRecord(RoundRecord):
    answer_id: str
    agent: str
    question_id: str
    version: int
    rater: str
    rater_group: str
    rating: float | None
    reason: str
    ok: bool
    attempts: int
    method: str

    @property
    def failed(self) -> bool:
        return not self.ok


class ScoreRecord(RoundRecord):
    answer_id: str
    agent: str
    group: str
    question_id: str
    version: int
    observer: int
    dimension: str
    score: float | None
    ok: bool
    attempts: int
    method: str

    @property
    def failed(self) -> bool:
        return not self.ok


class VerdictRecord(RoundRecord):
    """What the verifiable judges gave one answer version: each judge's score by name.

    ``judges`` maps a judge (``decline``, ``reference``) to its score on [0, 1], None where the
    question lacks the field it reads; ``appropriate`` is the veto's input (None when the
    question has no ``expected``).
    """

    answer_id: str
    agent: str
    group: str
    question_id: str
    version: int
    expected: str | None
    judges: dict[str, float | None]
    declined: bool
    decline_reason: str
    appropriate: bool | None


register_kind("answers", AnswerRecord)
register_kind("ratings", RatingRecord)
register_kind("scores", ScoreRecord)
register_kind("verdicts", VerdictRecord)


def verdict_record(answer: AnswerRecord, expected: str | None, judgement, round_index: int, phase: str) -> VerdictRecord:
    return VerdictRecord(
        id=f"{answer.id}/verdict", round=round_index, phase=phase, answer_id=answer.id, agent=answer.agent,
        group=answer.group, question_id=answer.question_id, version=answer.version, expected=expected,
        judges={name: None if v is None else round(v, 4) for name, v in judgement.scores.items()},
        declined=judgement.decline.declined, decline_reason=judgement.decline.reason,
        appropriate=judgement.appropriate,
    )


# -- helpers shared with export -------------------------------------------------------------


def mean_peer_rating(ratings: list[RatingRecord]) -> float | None:
    """The mean of the ratings that were read (failures left out); None if none was."""
    valid = [r.rating for r in ratings if r.ok]
    return statistics.fmean(valid) if valid else None


def final_answers(answers: list[AnswerRecord]) -> list[AnswerRecord]:
    """Each (round, agent)'s last version: what the agent remembers and what pairs compare."""
    latest: dict[tuple[int, str], AnswerRecord] = {}
    for answer in answers:
        key = (answer.round, answer.agent)
        if key not in latest or answer.version > latest[key].version:
            latest[key] = answer
    return [latest[key] for key in sorted(latest)]


def memory_item(answer: AnswerRecord) -> MemoryItem:
    """A final answer as its agent remembers it: recalled by the question's similarity."""
    return MemoryItem(answer.agent, answer.question, {"answer": answer.text, "round": answer.round})


@dataclass(frozen=True)
class Assignment:
    agent: Agent
    question_id: str
    question: str


def assign_questions(ctx: RunContext, round_index: int) -> list[Assignment]:
    """Each round asks ``per_round`` distinct questions; agents share them round-robin.

    Questions walk through a seeded permutation of the training split, so rounds see new
    questions until the bank is used up; several agents answering the same question is
    what makes cross-agent comparisons possible.
    """
    train = list(ctx.loaded.train_questions)
    random.Random(ctx.seed_for("questions")).shuffle(train)
    per_round = min(ctx.scenario.questions.per_round, len(train), len(ctx.world.agents))
    start = round_index * per_round
    chosen = [train[(start + i) % len(train)] for i in range(per_round)]
    agents = list(ctx.world.agents)
    random.Random(ctx.seed_for(round_index, "assign")).shuffle(agents)
    return [Assignment(agent, chosen[i % per_round].id, chosen[i % per_round].text) for i, agent in enumerate(agents)]


def idle(steps: int) -> Producer[None]:
    """Wait ``steps`` scheduler steps (a world with nothing to do keeps in phase with the others)."""
    for _ in range(steps):
        yield []


# -- the protocol -----------------------------------------------------------------------------


def back_scatter(ctx: RunContext, rounds: int) -> Producer[None]:
    """All rounds of one world."""
    for index in range(rounds):
        yield from Round(ctx, index).run()


class Round:
    """The phases of one round of one world, each a step producing records."""

    def __init__(self, ctx: RunContext, index: int) -> None:
        self.ctx = ctx
        self.index = index
        self.config = ctx.scenario.backscatter
        self.assignments = assign_questions(ctx, index)
        self.peers = {
            a.agent.id: ctx.world.peers(a.agent, self.config.peers, random.Random(ctx.seed_for(index, "peers", a.agent.id)))
            for a in self.assignments
        }

    def _step(self, phase: Phase, make) -> Producer[list]:
        return self.ctx.step(Step(self.index, phase), make)

    def run(self) -> Producer[None]:
        by_agent = {a.agent.id: a for a in self.assignments}
        drafts = yield from self._step(DRAFT, self.draft)
        round_answers = list(drafts)
        latest = {r.agent: r for r in drafts}
        active = list(latest)
        for version in range(self.config.max_revisions + 1):
            ratings = yield from self._step(rate_phase(version), partial(self.rate, version, [latest[a] for a in active]))
            feedback = defaultdict(list)
            for rating in ratings:
                feedback[rating.agent].append(rating)
            if version == self.config.max_revisions:
                break
            active = [a for a in active if self._needs_revision(feedback[a])]
            if not active:
                steps_per_revision = 1 + rating_steps(self.config.rating.method, self.config.rating.max_retries)
                yield from idle((self.config.max_revisions - version) * steps_per_revision)
                break
            work = [(by_agent[a], latest[a], feedback[a]) for a in active]
            revised = yield from self._step(revise_phase(version + 1), partial(self.revise, work, version + 1))
            round_answers += revised
            latest.update({r.agent: r for r in revised})
        yield from self._step(OBSERVE, partial(self.observe, round_answers))
        if self.ctx.scenario.selfplay is not None:
            finals = {agent: answer.text for agent, answer in latest.items()}
            yield from self._step(SELFPLAY, partial(selfplay_step, self.ctx, self.index, self.assignments, finals))
        yield from self._step(ROUND_END, partial(immediate, []))
        self.ctx.memory.add([memory_item(r) for r in latest.values()])

    def _needs_revision(self, ratings: list[RatingRecord]) -> bool:
        mean = mean_peer_rating(ratings)
        return mean is not None and mean < self.config.stop_at_mean_rating

    # -- phases ---------------------------------------------------------------------------

    def draft(self) -> Producer[list[AnswerRecord]]:
        memory_config = self.ctx.scenario.memory
        if memory_config.k > 0:
            queries = [(a.agent.id, a.question) for a in self.assignments]
            recalled = self.ctx.memory.search(queries, k=memory_config.k, threshold=memory_config.threshold)
        else:
            recalled = [[] for _ in self.assignments]
        ops = []
        for assignment, hits in zip(self.assignments, recalled):
            memories = [(h.item.text, h.item.payload["answer"]) for h in hits]
            messages = prompts.answer_messages(assignment.agent.persona, assignment.question, memories)
            ops.append(self._generate(assignment.agent, messages, self._answer_id(assignment, 0)))
        outputs = yield ops
        return [
            self._answer_record(a, 0, first_completion(c), memories=[
                Recalled(question=h.item.text, answer=h.item.payload["answer"], similarity=round(h.score, 4))
                for h in hits
            ])
            for a, c, hits in zip(self.assignments, outputs, recalled)
        ]

    def revise(self, work: list[tuple[Assignment, AnswerRecord, list[RatingRecord]]],
               version: int) -> Producer[list[AnswerRecord]]:
        ops, means = [], []
        for assignment, previous, ratings in work:
            mean = mean_peer_rating(ratings)
            means.append(mean)
            messages = prompts.revision_messages(
                assignment.agent.persona, assignment.question, previous.text, mean, self.config.scale,
                [r.reason for r in ratings],
            )
            ops.append(self._generate(assignment.agent, messages, self._answer_id(assignment, version)))
        outputs = yield ops
        return [
            self._answer_record(assignment, version, first_completion(c), revised_from_rating=mean)
            for (assignment, _, _), c, mean in zip(work, outputs, means)
        ]

    def rate(self, version: int, answers: list[AnswerRecord]) -> Producer[list[RatingRecord]]:
        """Each answer's peers give a reason and a rating (method per scenario)."""
        work = [(answer, rater) for answer in answers for rater in self.peers[answer.agent]]
        ids = [self.ctx.record_id(self.index, a.agent, a.question_id, a.version, "peer", r.id) for a, r in work]
        method, scale = self.config.rating.method, self.config.scale
        if method == "logprob":
            asks = [
                (self.ctx.backend(rater.model),
                 self._request(rater, prompts.peer_reason_messages(rater.persona, answer.question, answer.text),
                               self.ctx.seed_for(record_id, "reason"), self.config.reason_tokens))
                for (answer, rater), record_id in zip(work, ids)
            ]
            ratings: list[Rating] = yield from reasoned_ratings(asks, scale)
        else:
            asks = [
                (self.ctx.backend(rater.model), self._json_request(rater, answer, record_id))
                for (answer, rater), record_id in zip(work, ids)
            ]
            ratings = yield from json_ratings(asks, scale, self.config.rating.max_retries)
        phase = str(rate_phase(version))
        return [
            RatingRecord(
                id=record_id, round=self.index, phase=phase, answer_id=answer.id, agent=answer.agent,
                question_id=answer.question_id, version=answer.version, rater=rater.id, rater_group=rater.group,
                rating=rating.value, reason=rating.reason, ok=rating.ok, attempts=rating.attempts, method=method,
            )
            for (answer, rater), record_id, rating in zip(work, ids, ratings)
        ]

    def observe(self, answers: list[AnswerRecord]) -> Producer[list[ScoreRecord | VerdictRecord]]:
        """Observer scores and verifiable verdicts of every version, their requests in one step."""
        config = self.ctx.scenario.observers
        panel = ObserverPanel(config, self.ctx.backend(config.model))
        questions = {q.id: q for q in self.ctx.loaded.train_questions}
        asked = [questions[a.question_id] for a in answers]
        scored, judged = yield from gather([
            panel.score([(a.question, a.text) for a in answers], [a.id for a in answers], self.ctx.seed),
            verify(asked, [a.text for a in answers], self.ctx.memory.encoder),
        ])
        verdicts = [verdict_record(a, q.expected, j, self.index, str(OBSERVE))
                    for a, q, j in zip(answers, asked, judged)]
        return [
            ScoreRecord(
                id=score_id(answer.id, score.observer, score.dimension), round=self.index, phase=str(OBSERVE),
                answer_id=answer.id, agent=answer.agent, group=answer.group, question_id=answer.question_id,
                version=answer.version, observer=score.observer, dimension=score.dimension,
                score=score.rating.value, ok=score.rating.ok, attempts=score.rating.attempts,
                method=config.rating.method,
            )
            for answer, scores in zip(answers, scored)
            for score in scores
        ] + verdicts

    # -- requests and records -------------------------------------------------------------

    def _answer_id(self, assignment: Assignment, version: int) -> str:
        return self.ctx.record_id(self.index, assignment.agent.id, assignment.question_id, version)

    def _request(self, agent: Agent, messages: list[Message], seed: int,
                 max_new_tokens: int | None = None, prefix: str = "") -> GenerationRequest:
        sampling = agent.sampling
        return GenerationRequest(messages=messages, prefix=prefix, temperature=sampling.temperature,
                                 top_p=sampling.top_p, max_new_tokens=max_new_tokens or sampling.max_new_tokens,
                                 seed=seed)

    def _generate(self, agent: Agent, messages: list[Message], record_id: str) -> Generate:
        """An agent's answer request (continuing its reply prefix), seeded by the id of the record it will become."""
        request = self._request(agent, messages, self.ctx.seed_for(record_id), prefix=agent.reply_prefix)
        return Generate(self.ctx.backend(agent.model), request)

    def _json_request(self, rater: Agent, answer: AnswerRecord, record_id: str):
        messages = prompts.peer_json_messages(rater.persona, answer.question, answer.text, self.config.scale)
        return lambda attempt: self._request(rater, messages, self.ctx.seed_for(record_id, "json", attempt),
                                             self.config.reason_tokens + 16)

    def _answer_record(self, assignment: Assignment, version: int, completion: Completion, **extra) -> AnswerRecord:
        agent = assignment.agent
        return AnswerRecord(
            id=self._answer_id(assignment, version), round=self.index, phase=str(answer_phase(version)),
            agent=agent.id, group=agent.group, question_id=assignment.question_id, question=assignment.question,
            version=version, text=(agent.reply_prefix + completion.text).strip(), tokens=completion.num_tokens,
            finish_reason=completion.finish_reason, **extra,
        )


BACK_SCATTER = Protocol(  # its export rows and report sections are the exporter's and the report's core
    "back-scatter", claims=None, rounds=back_scatter,
    # answer, rate, (revise, rate) per revision, observe, (self-play), the round end: Round.run
    phases_per_round=lambda s: 2 + 2 * s.backscatter.max_revisions + 2 + (s.selfplay is not None),
    record_kinds=("answers", "ratings", "scores", "verdicts"),
)
