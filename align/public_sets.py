"""Question sets beside the scenario's held-out split: a user's files and the public benchmarks.

The public sets (AdvBench's harmful behaviours; XSTest's safe-but-alarming prompts and their
unsafe contrasts) are read from where they lie — ``$SOCIALIGN_EVALSETS``, else
``../shared/evalsets`` — and never copied: they measure, they never train. Where they are absent
(a fresh clone), whatever asks for them says so in one line and goes on without them; under
``CI=true`` their absence is an error, so a CI run cannot pass by skipping them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from scenarios.question_files import load_questions
from scenarios.schema import Question

ENVIRONMENT = "SOCIALIGN_EVALSETS"
DEFAULT_DIR = Path("..") / "shared" / "evalsets"
MODES = ("off", "sample", "full")


@dataclass(frozen=True)
class PublicSet:
    name: str
    file: str
    sample: dict[str, int]  # the seeded sample's size per `expected` label (``--public sample``)


PUBLIC_SETS = (
    PublicSet("AdvBench", "advbench.csv", {"decline": 100}),
    PublicSet("XSTest", "xstest.csv", {"answer": 100, "decline": 50}),
)


@dataclass(frozen=True)
class QuestionSet:
    """Questions scored together as one table of the evaluation."""

    name: str
    source: str
    questions: list[Question]


class EvalsetsMissing(Exception):
    """The public sets were asked for under CI=true and are not where they should be."""


def evalsets_dir(override: str | Path | None = None) -> Path:
    """Where the public sets should lie: the argument, else $SOCIALIGN_EVALSETS, else ../shared/evalsets."""
    return Path(override or os.environ.get(ENVIRONMENT) or DEFAULT_DIR).expanduser()


def missing_files(directory: Path) -> list[str]:
    return [s.file for s in PUBLIC_SETS if not (directory / s.file).is_file()]


def locate(override: str | Path | None = None) -> tuple[Path | None, str | None]:
    """The public sets' directory, or None with the one line that says why they are skipped.

    Raises ``EvalsetsMissing`` instead under CI=true."""
    directory = evalsets_dir(override)
    missing = missing_files(directory)
    if not missing:
        return directory, None
    line = (f"public sets skipped: {', '.join(missing)} not found in {directory} "
            f"(set {ENVIRONMENT} or --evalsets to the folder that holds them)")
    if os.environ.get("CI") == "true":
        raise EvalsetsMissing(line.replace("public sets skipped: ", "public sets missing under CI=true: "))
    return None, line


def public_sets(directory: Path, mode: str, seed: int = 0) -> list[QuestionSet]:
    """Each public set whole (``full``) or as its seeded sample per label (``sample``), by id."""
    if mode not in MODES[1:]:
        raise ValueError(f"public sets mode {mode!r}: expected one of {', '.join(MODES[1:])}")
    sets = []
    for public in PUBLIC_SETS:
        path = directory / public.file
        questions = load_questions(path)
        if mode == "sample":
            questions = seeded_sample(questions, public.sample, seed)
        sets.append(QuestionSet(public.name, str(path), questions))
    return sets


def seeded_sample(questions: list[Question], sizes: dict[str, int], seed: int) -> list[Question]:
    """``sizes[label]`` questions of each ``expected`` label (all when fewer), in id order."""
    chosen = []
    for label, size in sizes.items():
        pool = [q for q in questions if q.expected == label]
        chosen += random.Random(f"{seed}:{label}").sample(pool, min(size, len(pool)))
    return sorted(chosen, key=lambda q: q.id)


def file_sets(paths: list[str]) -> list[QuestionSet]:
    """A user's question files (bank YAML, JSONL, CSV), each scored as its own set."""
    return [QuestionSet(Path(path).stem, str(path), load_questions(path)) for path in paths]
