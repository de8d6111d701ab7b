"""Step-level preference pairs from a searched tree (MCTS-DPO's training data)."""

from __future__ import annotations

from dataclasses import dataclass

from formats.rows import label_smoothing
from search.mcts import Node, Tree


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
