"""One Back-Scatter round, phase by phase, each phase one batched backend call per model.

draft → peers rate (reason, then rating) → revise while the mean peer rating is under the
stopping threshold (up to ``max_revisions``) → observers score every version on every
dimension → the final answer goes to the agent's memory.

Phases are pure functions of earlier records and derived seeds, which is what lets a killed
run resume to exactly the records of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from agents import prompts
from agents.backends import Backend, Completion, GenerationRequest, Message
from agents.grouping import call_grouped
from agents.judge import Rating, ratings_from_json, ratings_from_logprobs
from agents.memory import MemoryItem
from sandbox.observers import ObserverPanel
from sandbox.world import Agent

if TYPE_CHECKING:
    from sandbox.simulation import Simulation


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (run seed, round, phase, agent, ...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def generate_each(items: list[tuple[Backend, GenerationRequest]]) -> list[Completion]:
    """One completion per (backend, request): one ``generate`` call per distinct backend."""
    return call_grouped(
        [backend for backend, _ in items],
        [request for _, request in items],
        lambda backend, requests: [c[0] for c in backend.generate(requests)],
    )


def mean_peer_rating(ratings: list[dict]) -> float | None:
    """The mean of the ratings that were read (failures left out); None if none was."""
    valid = [r["rating"] for r in ratings if r["ok"]]
    return statistics.fmean(valid) if valid else None


def final_answers(answers: list[dict]) -> list[dict]:
    """Each (round, agent)'s last version: what the agent remembers and what pairs compare."""
    latest: dict[tuple[int, str], dict] = {}
    for answer in answers:
        key = (answer["round"], answer["agent"])
        if key not in latest or answer["version"] > latest[key]["version"]:
            latest[key] = answer
    return [latest[key] for key in sorted(latest)]


def memory_item(answer: dict) -> MemoryItem:
    """A final answer as its agent remembers it: recalled by the question's similarity."""
    return MemoryItem(answer["agent"], answer["question"], {"answer": answer["text"], "round": answer["round"]})


@dataclass(frozen=True)
class Assignment:
    agent: Agent
    question_id: str
    question: str


class Round:
    """Runs (or, on resume, replays from records) the phases of one round."""

    def __init__(self, sim: Simulation, index: int) -> None:
        self.sim = sim
        self.index = index
        self.config = sim.scenario.backscatter
        self.assignments = sim.assign_questions(index)
        self.peers = {
            a.agent.id: sim.world.peers(a.agent, self.config.peers, random.Random(self._seed("peers", a.agent.id)))
            for a in self.assignments
        }

    def _seed(self, *parts: object) -> int:
        return derive_seed(self.sim.seed, self.index, *parts)

    def _record_id(self, agent: str, question_id: str, version: int, *extra: object) -> str:
        return "/".join(str(p) for p in (self.sim.run_id, self.index, agent, question_id, version, *extra))

    def run(self) -> None:
        by_agent = {a.agent.id: a for a in self.assignments}
        latest = {r["agent"]: r for r in self.sim.phase(self.index, "draft", "answers", self.draft)}
        active = list(latest)
        for version in range(self.config.max_revisions + 1):
            ratings = self.sim.phase(
                self.index, f"rate-{version}", "ratings", partial(self.rate, [latest[a] for a in active])
            )
            feedback = defaultdict(list)
            for rating in ratings:
                feedback[rating["agent"]].append(rating)
            if version == self.config.max_revisions:
                break
            active = [a for a in active if self._needs_revision(feedback[a])]
            if not active:
                break
            revised = self.sim.phase(
                self.index,
                f"revise-{version + 1}",
                "answers",
                partial(self.revise, [(by_agent[a], latest[a], feedback[a]) for a in active], version + 1),
            )
            latest.update({r["agent"]: r for r in revised})
        round_answers = [r for r in self.sim.records["answers"] if r["round"] == self.index]
        self.sim.phase(self.index, "observe", "scores", partial(self.observe, round_answers))
        self.sim.phase(self.index, "memory", None, partial(self.remember, list(latest.values())))

    def _needs_revision(self, ratings: list[dict]) -> bool:
        mean = mean_peer_rating(ratings)
        return mean is not None and mean < self.config.stop_at_mean_rating

    # -- phases ---------------------------------------------------------------------------

    def draft(self) -> list[dict]:
        memory_config = self.sim.scenario.memory
        if memory_config.k > 0:
            queries = [(a.agent.id, a.question) for a in self.assignments]
            recalled = self.sim.memory.search(queries, k=memory_config.k, threshold=memory_config.threshold)
        else:
            recalled = [[] for _ in self.assignments]
        items = []
        for assignment, hits in zip(self.assignments, recalled):
            memories = [(h.item.text, h.item.payload["answer"]) for h in hits]
            messages = prompts.answer_messages(assignment.agent.persona, assignment.question, memories)
            items.append((self.sim.backend(assignment.agent.model), self._request(assignment.agent, messages, "draft")))
        completions = generate_each(items)
        return [
            self._answer_record(a, 0, c, memories=[
                {"question": h.item.text, "answer": h.item.payload["answer"], "similarity": round(h.score, 4)}
                for h in hits
            ])
            for a, c, hits in zip(self.assignments, completions, recalled)
        ]

    def revise(self, work: list[tuple[Assignment, dict, list[dict]]], version: int) -> list[dict]:
        items, means = [], []
        for assignment, previous, ratings in work:
            mean = mean_peer_rating(ratings)
            means.append(mean)
            messages = prompts.revision_messages(
                assignment.agent.persona, assignment.question, previous["text"], mean, self.config.scale,
                [r["reason"] for r in ratings],
            )
            items.append((self.sim.backend(assignment.agent.model),
                          self._request(assignment.agent, messages, f"revise-{version}")))
        completions = generate_each(items)
        return [
            self._answer_record(assignment, version, completion, revised_from_rating=mean)
            for (assignment, _, _), completion, mean in zip(work, completions, means)
        ]

    def rate(self, answers: list[dict]) -> list[dict]:
        """Each answer's peers give a reason and a rating (method per scenario)."""
        work = [(answer, rater) for answer in answers for rater in self.peers[answer["agent"]]]
        phase = f"rate-{answers[0]['version'] if answers else 0}"
        method = self.config.rating.method
        if method == "logprob":
            ratings = self._rate_by_reason_then_logprob(work, phase)
        else:
            ratings = self._rate_by_json(work, phase)
        return [
            {
                "id": self._record_id(answer["agent"], answer["question_id"], answer["version"], "peer", rater.id),
                "round": self.index,
                "phase": phase,
                "answer_id": answer["id"],
                "agent": answer["agent"],
                "question_id": answer["question_id"],
                "version": answer["version"],
                "rater": rater.id,
                "rater_group": rater.group,
                "rating": rating.value,
                "reason": rating.reason,
                "ok": rating.ok,
                "attempts": rating.attempts,
                "method": method,
            }
            for (answer, rater), rating in zip(work, ratings)
        ]

    def _rate_by_reason_then_logprob(self, work, phase: str) -> list[Rating]:
        reason_prompts = [
            prompts.peer_reason_messages(rater.persona, answer["question"], answer["text"]) for answer, rater in work
        ]
        reasons = generate_each([
            (self.sim.backend(rater.model),
             self._request(rater, messages, phase, "reason", answer["agent"], max_new_tokens=self.config.reason_tokens))
            for (answer, rater), messages in zip(work, reason_prompts)
        ])
        scores = call_grouped(
            [self.sim.backend(rater.model) for _, rater in work],
            [prompts.rating_followup(messages, reason.text.strip(), self.config.scale)
             for messages, reason in zip(reason_prompts, reasons)],
            lambda backend, batch: ratings_from_logprobs(backend, batch, self.config.scale),
        )
        return [Rating(s.value, reason.text.strip(), s.ok, s.attempts) for s, reason in zip(scores, reasons)]

    def _rate_by_json(self, work, phase: str) -> list[Rating]:
        def call(backend: Backend, batch: list[tuple[dict, Agent]]) -> list[Rating]:
            def request_for(i: int, messages: list[Message], attempt: int) -> GenerationRequest:
                answer, rater = batch[i]
                return self._request(rater, messages, phase, "json", answer["agent"], attempt,
                                     max_new_tokens=self.config.reason_tokens + 16)

            messages = [
                prompts.peer_json_messages(rater.persona, answer["question"], answer["text"], self.config.scale)
                for answer, rater in batch
            ]
            return ratings_from_json(backend, messages, self.config.scale, request_for,
                                     self.config.rating.max_retries)

        return call_grouped([self.sim.backend(rater.model) for _, rater in work], work, call)

    def observe(self, answers: list[dict]) -> list[dict]:
        panel = ObserverPanel(self.sim.scenario.observers, self.sim.backend(self.sim.scenario.observers.model))
        scored = panel.score([(a["question"], a["text"]) for a in answers], self._seed("observe"))
        return [
            {
                "id": f"{answer['id']}/obs{score.observer}/{score.dimension}",
                "round": self.index,
                "phase": "observe",
                "answer_id": answer["id"],
                "agent": answer["agent"],
                "group": answer["group"],
                "question_id": answer["question_id"],
                "version": answer["version"],
                "observer": score.observer,
                "dimension": score.dimension,
                "score": score.rating.value,
                "ok": score.rating.ok,
                "attempts": score.rating.attempts,
                "method": panel.config.rating.method,
            }
            for answer, scores in zip(answers, scored)
            for score in scores
        ]

    def remember(self, finals: list[dict]) -> list[dict]:
        self.sim.memory.add([memory_item(r) for r in finals])
        return []

    # -- helpers --------------------------------------------------------------------------

    def _request(self, agent: Agent, messages: list[Message], *seed_parts: object,
                 max_new_tokens: int | None = None) -> GenerationRequest:
        sampling = agent.sampling
        return GenerationRequest(
            messages=messages,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=max_new_tokens or sampling.max_new_tokens,
            seed=self._seed(agent.id, *seed_parts),
        )

    def _answer_record(self, assignment: Assignment, version: int, completion: Completion, **extra) -> dict:
        agent = assignment.agent
        return {
            "id": self._record_id(agent.id, assignment.question_id, version),
            "round": self.index,
            "phase": "draft" if version == 0 else f"revise-{version}",
            "agent": agent.id,
            "group": agent.group,
            "question_id": assignment.question_id,
            "question": assignment.question,
            "version": version,
            "text": completion.text.strip(),
            "tokens": completion.num_tokens,
            "finish_reason": completion.finish_reason,
            **extra,
        }
