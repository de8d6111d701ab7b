"""Step-level Monte Carlo tree search over an assistant's reply (after MCTS-DPO, Xie et al. 2024).

A node is a prefix of the reply made of steps; a step is what the model writes after the prefix
up to a delimiter (a newline, a sentence end, an inline "Step k:" label) or a token budget. One
simulation: select a leaf from the committed root by PUCT, expand it with k sampled steps
(deduplicated), evaluate every new child, back the values up the path. After N simulations the
root moves to its most-visited child (commit); the reply is done when a committed step ends it
(EOS) or a budget runs out. Siblings along the committed path become step-level preference
pairs for conservative DPO.

The search is a PRODUCER: a generator that yields the backend ops it needs (``Generate``) and
receives their results, so a driver batches the frontier nodes of every tree into one backend
call per step. ``run_producers`` is that driver for now (the engine's scheduler replaces it).
Trees are plain dicts when saved, and every sample is seeded by (run seed, tree, node), so a
search resumed from a saved tree ends with the same tree as one never interrupted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from agents.backends.base import Backend, Completion, GenerationRequest, Message
from agents.seeding import derive_seed

# -- steps ----------------------------------------------------------------------------------

DELIMITERS = ("newline", "sentence", "step")
# What the backend stops on, per delimiter. An inline "Step k:" label cannot be a stop string (the
# step it starts would stop at once), so ``split_step`` cuts it after generation.
STOP_STRINGS = {"newline": ("\n",), "sentence": (". ", "! ", "? "), "step": ()}
SENTENCE_END = re.compile(r"[.!?](?= )")
STEP_LABEL = re.compile(r"(?<=\S)[ \t]*(?=Step \d+:)")


def split_step(text: str, delimiters: Iterable[str] = ("newline", "step")) -> str:
    """The first step of a raw text: up to and including the first newline, up to a sentence's
    end mark (the space after it starts the next step), or up to an inline "Step k:" label that
    follows other text — whichever comes first; the whole text when none occurs."""
    cuts = []
    if "newline" in delimiters and "\n" in text:
        cuts.append(text.index("\n") + 1)
    if "sentence" in delimiters and (end := SENTENCE_END.search(text)):
        cuts.append(end.end())
    if "step" in delimiters and (label := STEP_LABEL.search(text)):
        cuts.append(label.start())
    return text[: min(cuts)] if cuts else text


def normalise_step(text: str) -> str:
    """The text two steps are compared by for deduplication: case and spacing ignored."""
    return " ".join(text.split()).lower()


def step_prior(logprobs: Iterable[float]) -> float:
    """Length-normalised step probability p = exp(mean token log-prob), in (0, 1]."""
    values = list(logprobs)
    return math.exp(sum(values) / len(values))


# -- trees ----------------------------------------------------------------------------------


@dataclass
class Node:
    """A step and its search statistics. Ids are paths ("0" the root, "0.2" its third child)."""

    id: str
    parent: str | None
    step: str = ""
    tokens: int = 0
    prior: float = 1.0
    n: int = 0
    value_sum: float = 0.0
    value: float | None = None  # this node's own evaluation (the leaf value it was backed up with)
    terminal: bool = False
    finish_reason: str | None = None  # the step's: eos | stop | length
    children: list[str] = field(default_factory=list)

    @property
    def q(self) -> float:
        """Mean backed-up value Q = W / n (0 before any visit)."""
        return self.value_sum / self.n if self.n else 0.0

    @property
    def depth(self) -> int:
        return self.id.count(".")


@dataclass
class Tree:
    """One search: the prompt, every node, and the committed root the search continues from."""

    id: str
    messages: list[Message]
    nodes: dict[str, Node]
    root: str = "0"
    simulations: int = 0  # completed at the current committed root
    done: bool = False

    @classmethod
    def new(cls, tree_id: str, messages: list[Message]) -> Tree:
        return cls(id=tree_id, messages=list(messages), nodes={"0": Node(id="0", parent=None)})

    def path(self, node_id: str) -> list[Node]:
        """Nodes from the original root down to ``node_id``."""
        path = []
        current: str | None = node_id
        while current is not None:
            path.append(self.nodes[current])
            current = self.nodes[current].parent
        return path[::-1]

    def prefix(self, node_id: str) -> str:
        """The assistant text of ``node_id``: its steps concatenated (raw, as generated)."""
        return "".join(node.step for node in self.path(node_id))

    def tokens(self, node_id: str) -> int:
        return sum(node.tokens for node in self.path(node_id))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "messages": self.messages,
            "root": self.root,
            "simulations": self.simulations,
            "done": self.done,
            "nodes": [asdict(node) for node in self.nodes.values()],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Tree:
        nodes = {d["id"]: Node(**d) for d in data["nodes"]}
        return cls(data["id"], list(data["messages"]), nodes, data["root"], data["simulations"], data["done"])


@dataclass(frozen=True)
class SearchSettings:
    k: int = 4  # steps sampled per expansion
    simulations: int = 8  # per committed step
    c_puct: float = 1.0
    temperature: float = 0.8
    top_p: float = 1.0
    step_tokens: int = 48  # budget of one step
    max_tokens: int = 256  # budget of the whole reply
    max_steps: int = 12
    delimiters: tuple[str, ...] = ("newline", "step")
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.delimiters) - set(DELIMITERS)
        if unknown:
            raise ValueError(f"delimiters must be among {DELIMITERS}, got {sorted(unknown)}")
        for name in ("k", "simulations", "step_tokens", "max_tokens", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def stop(self) -> tuple[str, ...]:
        return tuple(s for d in self.delimiters for s in STOP_STRINGS[d])


# -- the four phases ------------------------------------------------------------------------


def puct_score(q: float, p: float, parent_n: int, n: int, c: float) -> float:
    """PUCT (Silver et al. 2017): U = Q + c · p · √N / (1 + n).

    Q the child's mean value, p its prior (length-normalised step probability), N the parent's
    visits, n the child's visits: well-valued children are exploited, likely and rarely visited
    ones explored.
    """
    return q + c * p * math.sqrt(parent_n) / (1 + n)


def select(tree: Tree, c: float) -> list[Node]:
    """From the committed root, follow the child with the highest PUCT (the first on a tie) down
    to a leaf — unexpanded, or terminal. Returns the path, committed root first."""
    node = tree.nodes[tree.root]
    path = [node]
    while node.children:
        parent = node
        node = max(
            (tree.nodes[i] for i in parent.children),
            key=lambda child: puct_score(child.q, child.prior, parent.n, child.n, c),
        )
        path.append(node)
    return path


def expansion_request(tree: Tree, leaf: Node, settings: SearchSettings) -> GenerationRequest:
    """k candidate next steps continuing the leaf's prefix, with log-probs for their priors."""
    return GenerationRequest(
        messages=tree.messages,
        prefix=tree.prefix(leaf.id),
        n=settings.k,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_new_tokens=min(settings.step_tokens, settings.max_tokens - tree.tokens(leaf.id)),
        stop=settings.stop,
        seed=derive_seed(settings.seed, tree.id, leaf.id, "expand"),
        logprobs=True,
    )


def expand(tree: Tree, leaf: Node, completions: list[Completion], settings: SearchSettings) -> list[Node]:
    """Add the leaf's children: one per distinct step (by ``normalise_step``, first sample kept).

    A step is the completion's text plus its stop string (trailing spaces go to the next step),
    cut again by ``split_step`` (inline "Step k:" labels); a step cut there keeps a share of the
    tokens proportional to its characters (backends return no offsets). Terminal: the model
    ended its reply (EOS), or the reply reached ``max_steps`` or ``max_tokens``.
    """
    seen: set[str] = set()
    children = []
    for completion in completions:
        raw = completion.text + (completion.stop_string or "").rstrip(" ")
        step = split_step(raw, settings.delimiters)
        key = normalise_step(step)
        if key in seen:
            continue
        seen.add(key)
        tokens, logprobs, finish = len(completion.token_ids), completion.logprobs or (), completion.finish_reason
        if len(step) < len(raw):
            tokens = max(1, round(tokens * len(step) / len(raw)))
            logprobs, finish = logprobs[:tokens], "stop"
        child = Node(
            id=f"{leaf.id}.{len(children)}",
            parent=leaf.id,
            step=step,
            tokens=tokens,
            prior=step_prior(logprobs) if logprobs else 1.0 / settings.k,  # an empty step: a uniform prior
            finish_reason=finish,
        )
        child.terminal = (
            finish == "eos"
            or child.depth >= settings.max_steps
            or tree.tokens(leaf.id) + tokens >= settings.max_tokens
        )
        tree.nodes[child.id] = child
        children.append(child)
    leaf.children = [child.id for child in children]
    return children


def backup(path: list[Node], value: float) -> None:
    """Every node on the path gets one more visit and the value: n += 1, W += v, so Q = W / n is
    the visit-weighted mean of the values backed up through it."""
    for node in path:
        node.n += 1
        node.value_sum += value


def commit(tree: Tree) -> None:
    """Move the root to its most-visited child (higher Q, then the first, on a tie); the search is
    done when that child ends the reply, or when the root has no children to move to."""
    children = [tree.nodes[i] for i in tree.nodes[tree.root].children]
    tree.simulations = 0
    if not children:
        tree.done = True
        return
    best = max(children, key=lambda child: (child.n, child.q))
    tree.root = best.id
    tree.done = best.terminal


# -- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Generate:
    """One generation request bound to the backend that serves it (the op a producer yields)."""

    backend: Backend
    request: GenerationRequest


Producer = Generator[list[Generate], list[list[Completion]], object]


class Evaluator(Protocol):
    def evaluate(
        self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend
    ) -> Generator[list[Generate], list[list[Completion]], list[float]]:
        """A producer returning one value per node (in [0, 1], higher is better)."""


@dataclass(frozen=True)
class OutcomeEvaluator:
    """Value from an outcome verifier (a scenario with exact answers): a terminal node's reply is
    verified as it stands; any other node's reply is completed ``rollouts`` times from its prefix
    (greedy by default) and the value is the mean verified score of the completed replies."""

    verify: Callable[[str], float]
    rollouts: int = 1
    temperature: float = 0.0

    def evaluate(self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend):
        open_nodes = [node for node in nodes if not node.terminal]
        requests = [
            GenerationRequest(
                messages=tree.messages,
                prefix=tree.prefix(node.id),
                n=self.rollouts,
                temperature=self.temperature,
                top_p=settings.top_p,
                max_new_tokens=settings.max_tokens - tree.tokens(node.id),
                seed=derive_seed(settings.seed, tree.id, node.id, "rollout"),
            )
            for node in open_nodes
        ]
        rollouts = (yield [Generate(backend, r) for r in requests]) if requests else []
        endings = {node.id: [c.text for c in done] for node, done in zip(open_nodes, rollouts)}
        values = []
        for node in nodes:
            prefix = tree.prefix(node.id)
            replies = [prefix + ending for ending in endings.get(node.id, [""])]
            values.append(sum(self.verify(reply) for reply in replies) / len(replies))
        return values


# -- the search as a producer ---------------------------------------------------------------


def search(
    tree: Tree,
    settings: SearchSettings,
    backend: Backend,
    evaluator: Evaluator,
    checkpoint: Callable[[Tree], None] | None = None,
) -> Producer:
    """Run simulations until the reply is done; ``checkpoint(tree)`` after each one (where a
    saved tree resumes). Yields one expansion request, then the evaluator's requests, per
    simulation; a simulation that selects a terminal leaf backs its value up again and yields
    nothing."""
    while not tree.done:
        path = select(tree, settings.c_puct)
        leaf = path[-1]
        if leaf.terminal:
            backup(path, leaf.value)
        else:
            [completions] = yield [Generate(backend, expansion_request(tree, leaf, settings))]
            children = expand(tree, leaf, completions, settings)
            values = yield from evaluator.evaluate(tree, children, settings, backend)
            for child, value in zip(children, values, strict=True):
                child.value = value
                backup([*path, child], value)
        tree.simulations += 1
        if tree.simulations >= settings.simulations:
            commit(tree)
        if checkpoint is not None:
            checkpoint(tree)
    return tree


def run_producers(producers: Iterable[Producer]) -> list[object]:
    """Drive producers to the end, one round at a time: every op pending in a round, from every
    producer, goes to its backend in ONE ``generate`` call per backend. Returns each producer's
    return value. (A stand-in for the engine's scheduler.)"""
    producers = list(producers)
    results: list[object] = [None] * len(producers)
    pending: dict[int, list[Generate]] = {}

    def advance(index: int, sent: list[list[Completion]] | None) -> None:
        try:
            pending[index] = producers[index].send(sent)
        except StopIteration as stop:
            pending.pop(index, None)
            results[index] = stop.value

    for index in range(len(producers)):
        advance(index, None)
    while pending:
        answers = {index: [None] * len(ops) for index, ops in pending.items()}
        by_backend: dict[int, tuple[Backend, list[tuple[int, int, GenerationRequest]]]] = {}
        for index, ops in pending.items():
            for position, op in enumerate(ops):
                by_backend.setdefault(id(op.backend), (op.backend, []))[1].append((index, position, op.request))
        for backend, items in by_backend.values():
            for (index, position, _), completions in zip(items, backend.generate([r for _, _, r in items])):
                answers[index][position] = completions
        for index in list(pending):
            advance(index, answers[index])
    return results


# -- step-level preference pairs ------------------------------------------------------------


def label_smoothing(n_chosen: int, n_rejected: int, cap: float = 0.5) -> float:
    """Conservative-DPO smoothing from visit counts: a = min(cap, n_rej / (n_chosen + n_rej)).

    A chosen step the search visited far more than the rejected one is a confident preference
    (a near 0); equal visits are as unsure as the cap allows.
    """
    return min(cap, n_rejected / (n_chosen + n_rejected))


@dataclass(frozen=True)
class StepPair:
    prefix: str  # the reply so far, shared by both steps
    chosen: Node
    rejected: Node
    label_smoothing: float


def step_pairs(tree: Tree) -> list[StepPair]:
    """At every committed step, the sibling with the highest Q (more visits on a tie) against each
    sibling with a lower Q. Steps are single steps without EOS (text only); blank steps skipped."""
    pairs = []
    committed = tree.path(tree.root)
    for parent in committed[:-1]:
        siblings = [tree.nodes[i] for i in parent.children if tree.nodes[i].step.strip()]
        if len(siblings) < 2:
            continue
        best = max(siblings, key=lambda node: (node.q, node.n))
        prefix = tree.prefix(parent.id)
        for other in siblings:
            if other.q < best.q:
                pairs.append(StepPair(prefix, best, other, label_smoothing(best.n, other.n)))
    return pairs


def steps_rows(tree: Tree, meta: dict | None = None) -> list[dict]:
    """``steps.jsonl`` rows of a tree: {prompt, prefix, chosen, rejected, q_*, n_*, meta}."""
    return [
        {
            "prompt": tree.messages,
            "prefix": pair.prefix,
            "chosen": pair.chosen.step,
            "rejected": pair.rejected.step,
            "q_chosen": pair.chosen.q,
            "q_rejected": pair.rejected.q,
            "n_chosen": pair.chosen.n,
            "n_rejected": pair.rejected.n,
            "meta": {
                **(meta or {}),
                "tree": tree.id,
                "depth": pair.chosen.depth,
                "chosen_id": pair.chosen.id,
                "rejected_id": pair.rejected.id,
                "label_smoothing": pair.label_smoothing,
            },
        }
        for pair in step_pairs(tree)
    ]
