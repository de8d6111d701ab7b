"""Built-in ``arithmetic`` scenario: seeded multi-step word problems with exact integer answers.

Why it exists: an exact answer is a verifiable judge that needs no large model, so step-level
search (MCTS) on a small CPU model gets a real signal. Problems chain 2-4 arithmetic operations
on small integers in everyday wording ("Maya has 12 apples. Maya buys 3 bags with 4 apples in
each. Maya gives away 7 apples. How many apples does Maya have now?").

Splits: candidates for each split are drawn from their own seed stream
(``derive_seed(seed, split, index)``), and a problem belongs to the split its TEXT hashes to
(1 in ``HELDOUT_EVERY`` goes to held-out), so no held-out problem can equal a training one,
however many of either are drawn.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from agents.seeding import derive_seed

HELDOUT_EVERY = 10
MAX_VALUE = 200  # running totals stay small: the point is multi-step reasoning, not big sums
SPLITS = ("train", "heldout")

NAMES = ["Maya", "Leo", "Aisha", "Tom", "Priya", "Sam", "Elena", "Kofi", "Mei", "Omar", "Lucia", "Ben"]
ITEMS = ["apples", "stickers", "marbles", "cookies", "pencils", "stamps", "books", "shells", "cards", "eggs"]

# One worked example (not a generated problem: its name is not in NAMES) shows a small model
# the step format and the answer line (SmolLM2-135M: 3-7% solved without it, 20% with it).
PROMPT = (
    "Solve the problem step by step, one step per line, and finish with \"The answer is N.\"\n\n"
    "Example:\n"
    "Problem: Lily has 5 shells. Lily buys 4 more shells. Lily gives away 2 shells. How many shells does Lily have now?\n"
    "Step 1: Lily starts with 5 shells.\n"
    "Step 2: She buys 4 more, so 5 + 4 = 9.\n"
    "Step 3: She gives away 2, so 9 - 2 = 7.\n"
    "The answer is 7.\n\n"
    "Problem: {text}"
)


@dataclass(frozen=True)
class Difficulty:
    """The knob: how many arithmetic operations a problem chains, and how large its operands are."""

    operations: int = 2
    max_number: int = 10
    multiply: bool = True  # also "doubles", "bags with c in each", "equal piles"; else + and - only

    def __post_init__(self) -> None:
        if not 1 <= self.operations <= 8:
            raise ValueError(f"operations must be in 1..8, got {self.operations}")
        if not 2 <= self.max_number <= 100:
            raise ValueError(f"max_number must be in 2..100, got {self.max_number}")


@dataclass(frozen=True)
class Problem:
    id: str
    split: str
    text: str
    expression: str  # fully parenthesised, e.g. "((12 + (3 * 4)) - 7)"
    answer: int

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": PROMPT.format(text=self.text)}]


# -- generation -----------------------------------------------------------------------------
# Each move turns (value, expression) into a sentence and a new (value, expression), or returns
# None when it does not fit (a negative count, an uneven share, a total over MAX_VALUE).


def _buy(rng, name, items, value, expr, top):
    b = rng.randint(2, top)
    wording = rng.choice([f"{name} buys {b} more {items}.", f"A friend gives {name} {b} more {items}."])
    return wording, value + b, f"({expr} + {b})", 1


def _give(rng, name, items, value, expr, top):
    if value < 3:
        return None
    b = rng.randint(1, min(top, value - 1))
    verb = rng.choice(["gives away", "loses", "sells"])
    return f"{name} {verb} {b} {items}.", value - b, f"({expr} - {b})", 1


def _groups(rng, name, items, value, expr, top):
    b, c = rng.randint(2, min(top, 6)), rng.randint(2, top)
    return f"{name} buys {b} bags with {c} {items} in each.", value + b * c, f"({expr} + ({b} * {c}))", 2


def _times(rng, name, items, value, expr, top):
    b = rng.randint(2, 4)
    word = {2: "doubles", 3: "triples", 4: "becomes four times as large"}[b]
    return f"{name}'s collection of {items} {word}.", value * b, f"({expr} * {b})", 1


def _share(rng, name, items, value, expr, top):
    divisors = [d for d in range(2, min(top, 6) + 1) if value % d == 0 and value // d >= 1]
    if not divisors:
        return None
    d = rng.choice(divisors)
    return f"{name} splits the {items} into {d} equal piles and keeps one pile.", value // d, f"({expr} // {d})", 1


MOVES = (_buy, _give, _groups, _times, _share)
ADDITIVE = (_buy, _give)


def _candidate(rng: random.Random, difficulty: Difficulty) -> tuple[str, str, int]:
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, difficulty.max_number)
    expr = str(value)
    sentences = [f"{name} has {value} {items}."]
    remaining = difficulty.operations
    while remaining:
        move = rng.choice(MOVES if difficulty.multiply else ADDITIVE)
        made = move(rng, name, items, value, expr, difficulty.max_number)
        if made is None or made[3] > remaining or made[1] > MAX_VALUE:
            continue
        sentence, value, expr, used = made
        sentences.append(sentence)
        remaining -= used
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences), expr, value


def split_of(text: str) -> str:
    """The split a problem text belongs to: a function of the text alone, so splits never overlap."""
    return "heldout" if derive_seed("arithmetic-split", text) % HELDOUT_EVERY == 0 else "train"


def problems(split: str, count: int, difficulty: Difficulty = Difficulty(), seed: int = 0) -> list[Problem]:
    """``count`` distinct problems of ``split``, the same ones for the same arguments."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    found: list[Problem] = []
    seen: set[str] = set()
    for index in range(3 * count * HELDOUT_EVERY + 100):  # bounded: tiny difficulties run out of problems
        if len(found) == count:
            return found
        text, expr, answer = _candidate(random.Random(derive_seed(seed, "arithmetic", split, index)), difficulty)
        if split_of(text) == split and text not in seen:
            seen.add(text)
            found.append(Problem(id=f"arithmetic/{split}/{len(found)}", split=split, text=text, expression=expr, answer=answer))
    if len(found) < count:
        raise ValueError(f"only {len(found)} distinct {split} problems at {difficulty}; ask for fewer or raise the difficulty")
    return found


# -- verification ---------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
ANSWER_PHRASE = re.compile(r"answer\s+is\b", re.IGNORECASE)
CLAUSE_END = re.compile(r"\n|\.(?!\d)|[!?;]")


def final_number(text: str) -> int | float | None:
    """The number a model gives as its answer.

    Rule: after the FIRST "answer is" (small models go on to invent another problem and answer
    it), the last number before that clause ends (a newline, a full stop, '!', '?' or ';'), so "The answer is 8 + 8 = 16." is 16 and "The answer is **$17**" is 17;
    with no such phrase (or no number in its clause), the last number anywhere in the text
    ("... = 17"). Numbers may carry a sign, thousands commas ("1,200") and decimals ("17.5"); a
    full stop is not a decimal point ("17." is 17). None when the text has no number.
    """
    phrase = ANSWER_PHRASE.search(text)
    numbers: list[str] = []
    if phrase:
        clause = text[phrase.end() :].lstrip(" :=*$")
        end = CLAUSE_END.search(clause)
        numbers = NUMBER.findall(clause[: end.start() if end else None])
    numbers = numbers or NUMBER.findall(text)
    if not numbers:
        return None
    raw = numbers[-1].replace(",", "")
    return float(raw) if "." in raw else int(raw)


def is_correct(text: str, answer: int) -> bool:
    """Whether the answer's final number (``final_number``) equals the exact answer."""
    value = final_number(text)
    return value is not None and value == answer
