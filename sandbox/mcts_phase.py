"""Step-level search as a world's rounds (scenario field ``mcts``): trees as records in the store.

Each round searches ``mcts.trees`` training questions (a seeded walk through the split, as
Back-Scatter walks its questions), one tree each, searched by the world's agents in turn with
their own models. A round is a sequence of steps, one per committed reply step: step ``s``
runs every unfinished tree's simulations up to its next commit (search.mcts.search_step) —
every tree of every world in the same scheduler calls — and records a snapshot of each tree it
advanced (kind ``trees``). A killed run resumes from the last recorded snapshot of each tree;
since every sample is seeded by tree and node, the resumed trees equal uninterrupted ones.

Values: ``answer`` verifies the completed reply's final number against the question's exact
answer; ``judges`` scores it with the verifiable judges (judges.verifiable: decline-
appropriateness and similarity to the reference, their mean). With ``peers``, the searching
agent's graph neighbours also rate each new node's partial answer (their own models and
personas, the digit distribution of an alignment rating, rescaled to [0, 1]), and a node's
value mixes their mean rating in with weight ``peer_weight``: agents search together.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from agents import prompts
from agents.backends import Backend
from agents.engine import Producer, gather, immediate, labelled
from judges.lm import logprob_ratings
from sandbox import report_figures as figures
from sandbox.context import RunContext
from sandbox.errors import RunError
from sandbox.protocol import ROUND_END, Protocol
from sandbox.records import Phase, RoundRecord, Step, register_kind
from sandbox.report_html import EXAMPLES, Report, absent, esc, optional_rows, table
from sandbox.world import Agent
from scenarios import Question
from scenarios.schema import DEFAULT_DIMENSIONS
from search.mcts import Evaluator, Node, SearchSettings, Tree, search_step
from search.pairs import steps_rows
from search.scenario import evaluator_for, new_tree, settings_of

OBSERVER_DIMENSION = DEFAULT_DIMENSIONS[0]  # alignment: helpful, honest and harmless


def search_phase(step: int) -> Phase:
    return Phase("mcts", step)


class TreeRecord(RoundRecord):
    """A tree after one committed step of its search (the latest one per tree is the search)."""

    tree_id: str
    agent: str
    question_id: str
    answer: int | float | None = None
    tree: Tree


register_kind("trees", TreeRecord)


PEER_SCALE = (1, 7)
PEER_PHASE = "mcts-peers"
NO_ANSWER_YET = "(nothing yet)"


@dataclass(frozen=True)
class PeerValued:
    """A node's value mixed with its peers' ratings of its partial answer (the reply so far):
    v = (1 - w) * inner + w * mean over peers of (rating - 1) / 6, the rating read as the
    expected digit 1-7 of each peer's next-token distribution. A peer whose rating cannot be
    read leaves the mean; with none, the inner value stands."""

    inner: Evaluator
    peers: tuple[Agent, ...]
    backends: tuple[Backend, ...]
    question: str
    weight: float

    def evaluate(self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend) -> Producer[list[float]]:
        asks = [(peer_backend, prompts.observer_messages(
                    OBSERVER_DIMENSION.name, OBSERVER_DIMENSION.description, PEER_SCALE, self.question,
                    tree.prefix(node.id).strip() or NO_ANSWER_YET, as_json=False, persona=peer.persona))
                for node in nodes for peer, peer_backend in zip(self.peers, self.backends)]
        values, ratings = yield from gather([self.inner.evaluate(tree, nodes, settings, backend),
                                             labelled(PEER_PHASE, logprob_ratings(asks, PEER_SCALE))])
        mixed = []
        for i, value in enumerate(values):
            read = [r.value for r in ratings[i * len(self.peers):(i + 1) * len(self.peers)] if r.value is not None]
            peer_value = (sum(read) / len(read) - PEER_SCALE[0]) / (PEER_SCALE[1] - PEER_SCALE[0]) if read else value
            mixed.append((1 - self.weight) * value + self.weight * peer_value)
        return mixed


@dataclass(frozen=True)
class Search:
    """One tree of a round: who searches it, on which question, valued how."""

    tree: Tree
    agent: Agent
    question: Question
    evaluator: Evaluator


def round_questions(ctx: RunContext, index: int) -> list[Question]:
    """Round ``index``'s questions: the next ``trees`` of a seeded permutation of the training split."""
    train = list(ctx.loaded.train_questions)
    random.Random(ctx.seed_for("mcts-questions")).shuffle(train)
    count = ctx.scenario.mcts.trees
    return [train[(index * count + i) % len(train)] for i in range(min(count, len(train)))]


def plan_round(ctx: RunContext, index: int) -> list[Search]:
    config = ctx.scenario.mcts
    agents = list(ctx.world.agents)
    searches = []
    for i, question in enumerate(round_questions(ctx, index)):
        agent = agents[i % len(agents)]
        tree = new_tree(ctx.record_id(index, agent.id, question.id), question)
        evaluator = evaluator_for(question, config, ctx.memory.encoder)
        if config.peers:
            peers = ctx.world.peers(agent, config.peers, random.Random(ctx.seed_for(index, "mcts-peers", agent.id)))
            evaluator = PeerValued(evaluator, tuple(peers), tuple(ctx.backend(p.model) for p in peers), question.text,
                                   config.peer_weight)
        searches.append(Search(tree, agent, question, evaluator))
    return searches


def mcts_rounds(ctx: RunContext, rounds: int) -> Producer[None]:
    """All rounds of one world."""
    for index in range(rounds):
        yield from search_round(ctx, index, plan_round(ctx, index))


def search_round(ctx: RunContext, index: int, searches: Sequence[Search]) -> Producer[None]:
    settings = settings_of(ctx.scenario.mcts, ctx.seed)
    current = {s.tree.id: s for s in searches}
    for step in range(settings.max_steps):
        live = [s for s in current.values() if not s.tree.done]
        if not live:
            break
        records = yield from ctx.step(Step(index, search_phase(step)), partial(advance, ctx, index, step, live, settings))
        for record in records:  # a copy: the stored record stays as it was written
            current[record.tree_id] = replace(current[record.tree_id], tree=record.tree.model_copy(deep=True))
    yield from ctx.step(Step(index, ROUND_END), partial(immediate, []))  # the round's closing marker


def advance(ctx: RunContext, index: int, step: int, live: Sequence[Search], settings: SearchSettings) -> Producer[list[TreeRecord]]:
    """One committed step of every live tree, searched together; a snapshot record of each."""
    trees = yield from gather([
        search_step(s.tree, settings, ctx.backend(s.agent.model), s.evaluator) for s in live
    ])
    phase = str(search_phase(step))
    return [
        TreeRecord(id=f"{tree.id}/step-{step}", round=index, phase=phase, tree_id=tree.id, agent=s.agent.id,
                   question_id=s.question.id, answer=s.question.answer, tree=tree.model_copy(deep=True))
        for s, tree in zip(live, trees)
    ]


def latest_trees(records: Sequence[TreeRecord]) -> list[TreeRecord]:
    """Each tree's last snapshot, in the order the trees were first recorded."""
    latest: dict[str, TreeRecord] = {}
    for record in records:
        latest[record.tree_id] = record
    return list(latest.values())


def tree_steps_rows(records: Sequence[TreeRecord], world: str) -> list[dict]:
    """``steps.jsonl`` rows of a world's searches (search.mcts.steps_rows, with provenance)."""
    return [row for record in latest_trees(records)
            for row in steps_rows(record.tree, meta={"world": world, "round": record.round, "agent": record.agent,
                                                     "question_id": record.question_id, "answer": record.answer,
                                                     "complete": record.tree.done})]


# -- its report section and the protocol ---------------------------------------------------

TREES_FILE = "trees.jsonl"


def tree_nodes(rows: list[dict]) -> dict[str, tuple[str, list[dict]]]:
    """tree id -> (its question, its nodes as the figure draws them: id, parent, visits, value = Q,
    text = the step), from each search's last stored snapshot."""
    try:
        records = latest_trees([TreeRecord.model_validate(row) for row in rows])
    except ValidationError as error:
        raise RunError(f"{TREES_FILE}: not a search tree record ({error.errors()[0]['msg']})") from None
    return {
        record.tree_id: (record.tree.messages[-1]["content"],
                         [{"id": n.id, "parent": n.parent, "visits": n.n, "value": n.q, "text": n.step}
                          for n in record.tree.nodes.values()])
        for record in records
    }


def principal_variation(nodes: list[dict]) -> list[dict]:
    """The most-visited path from the root: what the search settled on."""
    children = defaultdict(list)
    ids = {n["id"] for n in nodes}
    for node in nodes:
        children[node.get("parent") if node.get("parent") in ids else None].append(node)
    path, seen = [], set()
    current = children[None]
    while current:
        node = max(current, key=lambda n: (n.get("visits") or 0, str(n["id"])))
        if node["id"] in seen:
            break
        seen.add(node["id"])
        path.append(node)
        current = children.get(node["id"], [])
    return path


def trees_section(report: Report, root: Path) -> None:
    rows = optional_rows(root, TREES_FILE)
    if rows is None:
        report.add("trees", "Search trees", absent())
        return
    trees = tree_nodes(rows)
    if not trees:
        report.add("trees", "Search trees", absent(f"{TREES_FILE} has no nodes"))
        return
    largest = sorted(trees.items(), key=lambda t: (-len(t[1][1]), t[0]))[:EXAMPLES]
    body = (f"<p>{len(trees)} trees, {sum(len(n) for _, n in trees.values()):,} nodes; "
            f"the {len(largest)} largest:</p>")
    body += report.figure("trees", figures.trees_figure({name: nodes for name, (_, nodes) in largest}),
                          "search trees: node size by visits, colour by value")
    for name, (question, nodes) in largest:
        body += f"<h3>{esc(name)}: most-visited path</h3><p><b>{esc(question)}</b></p>"
        body += table(["depth", "visits", "value", "step"],
                      [(depth, n.get("visits"), n.get("value"), n.get("text", ""))
                       for depth, n in enumerate(principal_variation(nodes))])
    report.add("trees", "Search trees", body)


MCTS = Protocol(
    "mcts", claims=lambda scenario: scenario.mcts is not None, rounds=mcts_rounds,
    phases_per_round=lambda scenario: scenario.mcts.max_steps + 1, record_kinds=("trees",),
    export=lambda store: {"steps": tree_steps_rows(store.records("trees"), store.root.name)}, report=trees_section,
)
