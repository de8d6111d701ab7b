"""Value functions of the search: a node's value in [0, 1] from its completed replies.

A terminal node's reply is valued as it stands; any other node's reply is completed by
rollouts from its prefix (greedy by default, seeded by tree and node) and the value is the
mean over the completed replies. ``answer`` checks a final number against an exact answer;
``JudgesEvaluator`` asks the verifiable judges (no LM judge), its embeddings through the
scheduler (one encoder pass per step for every tree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.backends.base import Backend, GenerationRequest
from agents.engine import Generate, Producer
from agents.seeding import derive_seed
from judges.lm import verify
from scenarios import Question
from scenarios.arithmetic import is_correct
from search.mcts import ROLLOUT, Node, SearchSettings, Tree


def rollout_ops(tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend, rollouts: int,
                temperature: float) -> list[Generate]:
    """Complete each node's reply ``rollouts`` times from its prefix (seeded by tree and node)."""
    return [
        Generate(backend, GenerationRequest(
            messages=tree.messages,
            prefix=tree.prefix(node.id),
            n=rollouts,
            temperature=temperature,
            top_p=settings.top_p,
            max_new_tokens=max(1, settings.max_tokens - tree.tokens(node.id)),
            seed=derive_seed(settings.seed, tree.id, node.id, "rollout"),
        ), phase=ROLLOUT)
        for node in nodes
    ]


def completed_replies(tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend, rollouts: int,
                      temperature: float) -> Producer[list[list[str]]]:
    """Per node, its whole replies: a terminal node's as it stands, any other's completed by rollouts."""
    open_nodes = [node for node in nodes if not node.terminal]
    ops = rollout_ops(tree, open_nodes, settings, backend, rollouts, temperature)
    done = (yield ops) if ops else []
    endings = {node.id: [c.text for c in completions] for node, completions in zip(open_nodes, done)}
    return [[tree.prefix(node.id) + ending for ending in endings.get(node.id, [""])] for node in nodes]


@dataclass(frozen=True)
class OutcomeEvaluator:
    """Value from an outcome verifier (a scenario with exact answers): a terminal node's reply is
    verified as it stands; any other node's reply is completed ``rollouts`` times from its prefix
    (greedy by default) and the value is the mean verified score of the completed replies."""

    verify: Callable[[str], float]
    rollouts: int = 1
    temperature: float = 0.0

    def evaluate(self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend) -> Producer[list[float]]:
        replies = yield from completed_replies(tree, nodes, settings, backend, self.rollouts, self.temperature)
        return [sum(self.verify(reply) for reply in texts) / len(texts) for texts in replies]


def answer_evaluator(answer: float, rollouts: int = 1, temperature: float = 0.0) -> OutcomeEvaluator:
    """1 when the completed reply's final number is the exact answer, else 0."""
    return OutcomeEvaluator(lambda reply: float(is_correct(reply, answer)), rollouts, temperature)


@dataclass(frozen=True)
class JudgesEvaluator:
    """The mean of the verifiable judges the question feeds (judges.lm.verify: decline-
    appropriateness, cosine to the reference) over each node's completed replies: a social
    question's value with no LM judge. Embeddings go through the scheduler (one encoder pass
    per step for every tree)."""

    encoder: object
    question: Question
    rollouts: int = 1
    temperature: float = 0.0

    def evaluate(self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend) -> Producer[list[float]]:
        replies = yield from completed_replies(tree, nodes, settings, backend, self.rollouts, self.temperature)
        flat = [reply.strip() for texts in replies for reply in texts]
        judged = yield from verify([self.question] * len(flat), flat, self.encoder)
        values = iter(j.total or 0.0 for j in judged)
        return [sum(next(values) for _ in texts) / len(texts) for texts in replies]
