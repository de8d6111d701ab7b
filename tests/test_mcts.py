"""Step-level MCTS: PUCT, backup, dedup, commit and pairs on hand-built trees (numbers worked out by
hand), then real searches with a tiny random model: batched across trees, and resumable."""

from __future__ import annotations

import json
import math

import pytest

from agents.backends.base import Completion
from agents.backends.hf import HFBackend
from agents.engine import Scheduler
from formats.rows import label_smoothing
from search.mcts import (
    Node,
    SearchSettings,
    Tree,
    backup,
    commit,
    expand,
    puct_score,
    search,
    search_step,
    select,
    split_step,
)
from search.pairs import step_pairs, steps_rows
from search.values import OutcomeEvaluator

PROMPT = [{"role": "user", "content": "Maya has 12 apples and buys 3 more. How many does she have?"}]


def add(tree: Tree, parent: str, step: str, prior: float = 0.5, n: int = 0, w: float = 0.0, **extra) -> Node:
    node = Node(id=f"{parent}.{len(tree.nodes[parent].children)}", parent=parent, step=step, prior=prior, n=n, value_sum=w, **extra)
    tree.nodes[node.id] = node
    tree.nodes[parent].children.append(node.id)
    return node


# -- pure functions on hand-built trees -----------------------------------------------------


def test_puct_formula():
    # 0.5 + 1.5 * 0.4 * sqrt(9) / (1 + 2) = 0.5 + 0.6 = 1.1
    assert puct_score(0.5, 0.4, 9, 2, 1.5) == pytest.approx(1.1)
    assert puct_score(0.0, 0.9, 0, 0, 1.0) == 0.0  # an unvisited parent explores nothing yet


def test_backup_gives_visit_weighted_means_and_select_follows_puct():
    tree = Tree.new("t", PROMPT)
    root = tree.nodes["0"]
    good = add(tree, "0", "Step 1: 12 + 3 = 15.\n", prior=0.5)
    bad = add(tree, "0", "Step 1: 12 - 3 = 9.\n", prior=0.9)
    backup([root, good], 1.0)
    backup([root, bad], 0.0)
    backup([root, good], 0.5)
    assert (root.n, root.q) == (3, pytest.approx(0.5))  # (1 + 0 + 0.5) / 3
    assert (good.n, good.q) == (2, pytest.approx(0.75))
    assert (bad.n, bad.q) == (1, 0.0)
    # c = 1: good 0.75 + 0.5 * sqrt(3) / 3 = 1.0387 beats bad 0 + 0.9 * sqrt(3) / 2 = 0.7794
    assert [node.id for node in select(tree, 1.0)] == ["0", good.id]
    # c = 10: exploration wins, bad 7.794 beats good 0.75 + 2.887 = 3.637
    assert [node.id for node in select(tree, 10.0)] == ["0", bad.id]
    leaf = add(tree, good.id, "Step 2: done.\n")
    backup([root, good, leaf], 1.0)
    # good (0.833 + 0.5 * 2 / 4 = 1.083) beats bad (0 + 0.9 * 2 / 2 = 0.9), then its only child
    assert [node.id for node in select(tree, 1.0)] == ["0", good.id, leaf.id]  # walks down to a leaf


def test_select_starts_at_the_committed_root():
    tree = Tree.new("t", PROMPT)
    a = add(tree, "0", "a\n", n=1)
    add(tree, "0", "b\n", n=5, w=5.0)
    tree.root = a.id
    assert [node.id for node in select(tree, 1.0)] == [a.id]


def completion(text, ids, logprobs, finish="stop", stop="\n"):
    return Completion(text=text, token_ids=ids, finish_reason=finish, stop_string=stop if finish == "stop" else None, logprobs=logprobs)


def test_expand_dedups_by_normalised_text_and_sets_priors_and_terminals():
    tree = Tree.new("t", PROMPT)
    settings = SearchSettings(k=4, max_tokens=100, max_steps=5)
    children = expand(
        tree,
        tree.nodes["0"],
        [
            completion("Step 1: add 3", (1, 2, 3), (-0.1, -0.2, -0.3)),
            completion("step 1:  Add 3", (4, 5, 6), (-1.0, -1.0, -1.0)),  # the same step: dropped
            completion("The answer is 15.", (7, 8), (-0.5, -1.5), finish="eos"),
            completion("Sam has 6. Step 2: 12", (1,) * 10, (-1.0,) * 10, finish="eos"),
        ],
        settings,
    )
    assert [c.step for c in children] == ["Step 1: add 3\n", "The answer is 15.", "Sam has 6."]
    assert [c.id for c in children] == ["0.0", "0.1", "0.2"]
    assert tree.nodes["0"].children == ["0.0", "0.1", "0.2"]
    assert children[0].prior == pytest.approx(math.exp(-0.2))  # exp(mean log-prob)
    assert children[1].prior == pytest.approx(math.exp(-1.0))
    assert [c.terminal for c in children] == [False, True, False]  # the cut step continues
    # cut before the inline label: 10 of 21 characters kept -> 5 of 10 tokens
    assert (children[2].finish_reason, children[2].tokens) == ("stop", 5)


def test_expand_terminal_on_budgets():
    tree = Tree.new("t", PROMPT)
    settings = SearchSettings(k=2, max_tokens=5, max_steps=5)
    first = expand(tree, tree.nodes["0"], [completion("ab", (1, 2), (-1.0, -1.0))], settings)[0]
    assert not first.terminal
    by_tokens = expand(tree, first, [completion("cde", (3, 4, 5), (-1.0,) * 3, finish="length")], settings)[0]
    assert by_tokens.terminal  # 2 + 3 tokens = max_tokens
    tree2 = Tree.new("u", PROMPT)
    deep = expand(tree2, tree2.nodes["0"], [completion("a", (1,), (-1.0,))], SearchSettings(max_steps=1))[0]
    assert deep.terminal  # depth 1 = max_steps


def test_split_step():
    assert split_step("Step 1: 12 + 3 = 15\nStep 2: x") == "Step 1: 12 + 3 = 15\n"
    assert split_step("Step 1: 12 + 3 = 15. Step 2: 15 - 7 = 8.") == "Step 1: 12 + 3 = 15."
    assert split_step("Step 1: starts the reply") == "Step 1: starts the reply"  # a label at the start is no cut
    assert split_step("She has 15. Then 8.", ("sentence",)) == "She has 15."
    assert split_step("no delimiter here") == "no delimiter here"


def test_commit_moves_to_most_visited_child():
    tree = Tree.new("t", PROMPT)
    add(tree, "0", "a\n", n=3, w=0.0)
    b = add(tree, "0", "b\n", n=3, w=3.0)  # same visits, higher Q
    add(tree, "0", "c\n", n=1, w=1.0)
    tree.simulations = 4
    commit(tree)
    assert (tree.root, tree.simulations, tree.done) == (b.id, 0, False)
    add(tree, b.id, "The answer is 15.", n=2, w=2.0, terminal=True, finish_reason="eos")
    commit(tree)
    assert (tree.root, tree.done) == ("0.1.0", True)


def known_tree() -> Tree:
    """Committed path 0 -> A -> A0, with siblings at both levels."""
    tree = Tree.new("known", PROMPT)
    a = add(tree, "0", "Step 1: 12 + 3 = 15.\n", n=5, w=4.0)  # Q 0.8
    add(tree, "0", "Step 1: 12 - 3 = 9.\n", n=2, w=0.6)  # Q 0.3
    add(tree, "0", "Step 1: 12 + 3 is 15.\n", n=1, w=0.8)  # Q 0.8: a tie with A, no pair
    add(tree, "0", "\n", n=1, w=0.0)  # blank: skipped
    add(tree, "0", "Step 1: count.\n", n=9, w=4.5)  # Q 0.5, visited more than the best
    a0 = add(tree, a.id, "The answer is 15.", n=3, w=3.0, terminal=True, finish_reason="eos")
    add(tree, a.id, "The answer is 9.", n=1, w=0.0, terminal=True, finish_reason="eos")
    tree.root, tree.done = a0.id, True
    return tree


def test_step_pairs_from_a_known_tree():
    pairs = step_pairs(known_tree())
    found = [(p.prefix, p.chosen.id, p.rejected.id, p.label_smoothing) for p in pairs]
    assert found == [
        ("", "0.0", "0.1", pytest.approx(2 / 7)),  # a = 2 / (5 + 2)
        ("", "0.0", "0.4", 0.5),  # 9 / (5 + 9) capped at 0.5
        ("Step 1: 12 + 3 = 15.\n", "0.0.0", "0.0.1", pytest.approx(1 / 4)),
    ]


def test_label_smoothing_formula():
    assert label_smoothing(3, 1) == 0.25
    assert label_smoothing(1, 1) == 0.5
    assert label_smoothing(1, 3) == 0.5
    assert label_smoothing(4, 1, cap=0.1) == 0.1


def test_steps_rows_format():
    rows = steps_rows(known_tree(), meta={"scenario": "arithmetic"})
    assert len(rows) == 3
    last = rows[-1]
    assert set(last) == {"prompt", "prefix", "chosen", "rejected", "q_chosen", "q_rejected", "n_chosen", "n_rejected", "meta"}
    assert last["prompt"] == PROMPT
    assert (last["prefix"], last["chosen"], last["rejected"]) == ("Step 1: 12 + 3 = 15.\n", "The answer is 15.", "The answer is 9.")
    assert (last["q_chosen"], last["q_rejected"], last["n_chosen"], last["n_rejected"]) == (1.0, 0.0, 3, 1)
    assert last["meta"] == {
        "scenario": "arithmetic", "tree": "known", "depth": 2, "chosen_id": "0.0.0", "rejected_id": "0.0.1", "label_smoothing": 0.25,
    }
    json.dumps(rows)  # plain JSON


def test_tree_round_trips_through_dicts():
    tree = known_tree()
    again = Tree.model_validate(json.loads(tree.model_dump_json()))
    assert again == tree


# -- real searches with a tiny random model -------------------------------------------------

SETTINGS = SearchSettings(k=2, simulations=2, temperature=1.0, step_tokens=6, max_tokens=18, max_steps=3, seed=7)


def verify(reply: str) -> float:
    """A verifiable score of a reply (random-model text is never a right answer, so the test scores its length)."""
    return (len(reply) % 5) / 4


def trees() -> list[Tree]:
    return [Tree.new("tree-a", PROMPT), Tree.new("tree-b", [{"role": "user", "content": "What is 2 + 2?"}])]


class CountingBackend(HFBackend):
    """The hf backend, counting ``generate`` calls (the scheduler's batching is what is tested)."""

    generate_calls = 0

    def generate(self, requests):
        self.generate_calls += 1
        return super().generate(requests)


def run(backend, forest, step=search):
    """Search every tree of ``forest`` under one scheduler: (generate calls, requests) it made."""
    before = (backend.generate_calls, backend.stats.requests)
    Scheduler().run([step(tree, SETTINGS, backend, OutcomeEvaluator(verify)) for tree in forest])
    return backend.generate_calls - before[0], backend.stats.requests - before[1]


def assert_same_trees(found: list[Tree], expected: list[Tree]) -> None:
    """Same nodes, steps, visits and values; priors to float32 precision (a batch of other rows
    changes the last bits of a log-prob, never the sampled tokens)."""
    for a, b in zip(found, expected, strict=True):
        da, db = a.model_dump(), b.model_dump()
        priors_a = [node.pop("prior") for node in da["nodes"].values()]
        priors_b = [node.pop("prior") for node in db["nodes"].values()]
        assert da == db
        assert priors_a == pytest.approx(priors_b, rel=1e-4)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return CountingBackend(tiny_model_dir)


@pytest.fixture(scope="module")
def searched(backend):
    """Both trees searched together, and a snapshot of each after its first committed step."""
    forest = trees()
    first = run(backend, forest, search_step)
    snapshots = [tree.model_dump_json() for tree in forest]
    rest = run(backend, forest)
    return forest, snapshots, first[0] + rest[0], first[1] + rest[1]


def test_search_batches_all_trees_into_one_call_per_step_and_yields_pairs(backend, searched):
    forest, _, calls, requests = searched
    alone = []
    for tree in trees():
        first = run(backend, [tree], search_step)
        rest = run(backend, [tree])
        alone.append((first[0] + rest[0], first[1] + rest[1], tree))
    # Each scheduler step sends every tree's pending requests (expansions and rollouts) in one
    # call: as many calls as the longer search alone needs, and all the requests of both.
    assert calls == max(c for c, _, _ in alone)
    assert requests == sum(r for _, r, _ in alone)
    assert_same_trees(forest, [t for _, _, t in alone])  # batching changes nothing
    for tree in forest:
        assert tree.done and tree.nodes[tree.root].terminal
        for node in tree.path(tree.root)[:-1]:
            assert len(node.children) >= 1 and node.n >= SETTINGS.simulations
    rows = [row for tree in forest for row in steps_rows(tree)]
    assert rows, "the search produced no step pairs"
    for row in rows:
        assert row["q_chosen"] > row["q_rejected"] and "<|im_end|>" not in row["chosen"] + row["rejected"]


def test_resume_mid_search_gives_the_same_trees(backend, searched):
    forest, snapshots, _, _ = searched
    resumed = [Tree.model_validate_json(saved) for saved in snapshots]  # after the first committed step
    assert all(tree.root != "0" and not tree.done for tree in resumed)
    run(backend, resumed)
    assert_same_trees(resumed, forest)
