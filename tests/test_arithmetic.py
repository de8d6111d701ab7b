"""The arithmetic scenario: deterministic problems, disjoint splits, exact answers, and the
verifier that reads a model's final number."""

from __future__ import annotations

import ast
import operator

import pytest

from scenarios.arithmetic import Difficulty, final_number, is_correct, problems, split_of

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def evaluate(expression: str) -> int:
    """An independent evaluation of a generated expression (integers and + - * // only)."""

    def walk(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


@pytest.mark.parametrize("difficulty", [Difficulty(2, 10), Difficulty(3, 12, multiply=False), Difficulty(4, 20)])
def test_answers_are_the_expressions_values_and_operations_count(difficulty):
    batch = problems("train", 200, difficulty, seed=3)
    for problem in batch:
        assert evaluate(problem.expression) == problem.answer >= 0
        assert sum(problem.expression.count(op) for op in (" + ", " - ", " * ", " // ")) == difficulty.operations
        assert problem.text.endswith("have now?") and str(problem.answer) not in problem.text.split(".")[-1]
        if not difficulty.multiply:
            assert "*" not in problem.expression and "//" not in problem.expression
    assert len({p.text for p in batch}) == len(batch)


def test_problems_are_deterministic_per_seed():
    assert problems("train", 30, seed=1) == problems("train", 30, seed=1)
    assert problems("train", 30, seed=1) != problems("train", 30, seed=2)
    assert problems("train", 10, seed=1) == problems("train", 30, seed=1)[:10]  # a prefix of a longer draw


def test_heldout_never_equals_a_training_problem():
    train = {p.text for p in problems("train", 1000, Difficulty(2, 6), seed=0)}
    heldout = problems("heldout", 100, Difficulty(2, 6), seed=0)
    assert not train & {p.text for p in heldout}
    assert all(split_of(p.text) == "heldout" and p.split == "heldout" for p in heldout)
    assert all(split_of(text) == "train" for text in train)


def test_bad_arguments():
    with pytest.raises(ValueError, match="operations"):
        Difficulty(operations=0)
    with pytest.raises(ValueError, match="split"):
        problems("test", 3)
    with pytest.raises(ValueError, match="distinct"):
        problems("heldout", 100, Difficulty(1, 2))  # ~720 problems exist, a tenth of them held out


def test_prompt_asks_for_steps_and_the_answer_line():
    message = problems("train", 1)[0].messages()[0]
    assert message["role"] == "user" and "Step 1:" in message["content"] and "The answer is N." in message["content"]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Step 1: 12 + 3 = 15\nThe answer is 15.", 15),
        ("The answer is 8 + 8 = 16.", 16),  # the clause's last number
        ("The answer is **$17**.", 17),
        ("the answer is: 1,200 apples. Step 4: 3", 1200),  # the clause ends at its full stop
        ("The answer is 5.\n\nProblem: Tom has 2. ... The answer is 6.", 5),  # the first phrase: later text rambles
        ("The answer is 17.5", 17.5),
        ("The answer is -3.", -3),
        ("The answer is seventeen. 3 + 4 = 7", 7),  # no number in the phrase: the last number
        ("so 12 - 5 = 7", 7),
        ("pages 3-4", 4),  # a hyphen between numbers is not a minus sign
        ("1,2,3", 3),  # not a thousands separator
        ("I have no idea.", None),
        ("", None),
    ],
)
def test_final_number(text, number):
    assert final_number(text) == number


def test_is_correct():
    assert is_correct("Step 1: 12 + 12 = 24.\nThe answer is 24.", 24)
    assert is_correct("The answer is 24.0", 24)
    assert not is_correct("The answer is 24.5", 24)
    assert not is_correct("The answer is 8 + 8 = 16.", 8)
    assert not is_correct("no number at all", 0)
