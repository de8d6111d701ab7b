"""Step-level Monte Carlo tree search over an assistant's reply (after MCTS-DPO, Xie et al. 2024).

A node is a prefix of the reply made of steps; a step is what the model writes after the prefix
up to a delimiter (a newline, a sentence end, an inline "Step k:" label) or a token budget. One
simulation: select a leaf from the committed root by PUCT, expand it with k sampled steps
(deduplicated), evaluate every new child, back the values up the path. After N simulations the
root moves to its most-visited child (commit); the reply is done when a committed step ends it
(EOS) or a budget runs out. Siblings along the committed path become step-level preference
pairs for conservative DPO.

The search is a producer (agents.engine): it yields the ``Generate`` ops it needs and receives
their results, so under the ``Scheduler`` the frontier nodes of every tree (their expansions and
their rollouts alike) go to the backend in one batched call per step. Trees are pydantic models
(validated when read back from a run), and every sample is seeded by (run seed, tree, node), so
a search resumed from a saved tree ends with the same tree as one never interrupted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.backends.base import Backend, Completion, GenerationRequest, Message
from agents.engine import Generate, Producer
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


class _Model(BaseModel):
    # Mutable (the search updates statistics in place); no NaN, no unknown fields when read back.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=False)


class Node(_Model):
    """A step and its search statistics. Ids are paths ("0" the root, "0.2" its third child)."""

    id: str = Field(pattern=r"^0(\.\d+)*$")
    parent: str | None
    step: str = ""
    tokens: int = Field(0, ge=0)
    prior: float = Field(1.0, ge=0, le=1)
    n: int = Field(0, ge=0)
    value_sum: float = 0.0
    value: float | None = None  # this node's own evaluation (the leaf value it was backed up with)
    terminal: bool = False
    finish_reason: Literal["eos", "stop", "length"] | None = None  # the step's
    children: list[str] = Field(default_factory=list)

    @property
    def q(self) -> float:
        """Mean backed-up value Q = W / n (0 before any visit)."""
        return self.value_sum / self.n if self.n else 0.0

    @property
    def depth(self) -> int:
        return self.id.count(".")


class Tree(_Model):
    """One search: the prompt, every node, and the committed root the search continues from."""

    id: str
    messages: list[dict[str, str]] = Field(min_length=1)
    nodes: dict[str, Node]
    root: str = "0"
    simulations: int = Field(0, ge=0)  # completed at the current committed root
    done: bool = False

    @model_validator(mode="after")
    def _linked(self) -> Tree:
        """Every id a node names exists, and each node sits where its id says (a tree read back from
        a file is user input)."""
        if "0" not in self.nodes or self.root not in self.nodes:
            raise ValueError(f"tree '{self.id}': needs its root node '0' and its committed root '{self.root}'")
        for key, node in self.nodes.items():
            expected_parent = key.rpartition(".")[0] or None
            if node.id != key or node.parent != expected_parent or (node.parent and node.parent not in self.nodes):
                raise ValueError(f"tree '{self.id}': node '{key}' is not linked to its parent")
            missing = [c for c in node.children if c not in self.nodes or self.nodes[c].parent != key]
            if missing:
                raise ValueError(f"tree '{self.id}': node '{key}' lists child '{missing[0]}', which is not its child")
        return self

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

EXPAND, ROLLOUT = "mcts-expand", "mcts-rollout"  # the phases the scheduler's statistics count


class Evaluator(Protocol):
    def evaluate(self, tree: Tree, nodes: list[Node], settings: SearchSettings, backend: Backend) -> Producer[list[float]]:
        """A producer returning one value per node (in [0, 1], higher is better)."""


# -- the search as a producer ---------------------------------------------------------------


def simulate_once(tree: Tree, settings: SearchSettings, backend: Backend, evaluator: Evaluator) -> Producer[None]:
    """One simulation: select, expand (one request for k steps), evaluate the new children, back
    up. A simulation that selects a terminal leaf backs its value up again and asks for nothing."""
    path = select(tree, settings.c_puct)
    leaf = path[-1]
    if leaf.terminal:
        backup(path, leaf.value)
        return
    [completions] = yield [Generate(backend, expansion_request(tree, leaf, settings), phase=EXPAND)]
    children = expand(tree, leaf, completions, settings)
    values = yield from evaluator.evaluate(tree, children, settings, backend)
    for child, value in zip(children, values, strict=True):
        child.value = value
        backup([*path, child], value)


def search_step(tree: Tree, settings: SearchSettings, backend: Backend, evaluator: Evaluator) -> Producer[Tree]:
    """Simulate until the next commit: one committed step of the reply (the unit a run stores)."""
    while not tree.done:
        yield from simulate_once(tree, settings, backend, evaluator)
        tree.simulations += 1
        if tree.simulations >= settings.simulations:
            commit(tree)
            break
    return tree


def search(tree: Tree, settings: SearchSettings, backend: Backend, evaluator: Evaluator) -> Producer[Tree]:
    """Search until the reply is done (at most ``max_steps`` commits: each goes one step deeper)."""
    while not tree.done:
        yield from search_step(tree, settings, backend, evaluator)
    return tree
