"""Nothing that trains lies near a public evaluation row: every built-in bank question and
reference, every built-in scenario's personas, reply prefixes and descriptions, and every prompt
template stay below cosine 0.9 (the project's embedder) of each AdvBench and XSTest prompt.

The public sets are read from their path, never copied; where they are absent the test skips
with a hint, and under CI=true it fails.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from agents import prompts
from agents.memory import Encoder
from align import public_sets
from scenarios import builtin_banks, builtin_scenarios, load_bank, load_scenario
from scenarios.question_files import load_questions

NEAR = 0.9
FOUND, WHY = public_sets.locate() if os.environ.get("CI") != "true" else (public_sets.evalsets_dir(), None)
pytestmark = pytest.mark.skipif(FOUND is None, reason=WHY or "")


def training_texts() -> dict[str, str]:
    """Every text of ours that can reach a model being trained, by where it comes from."""
    texts = {}
    for bank in builtin_banks():
        for question in load_bank(bank).questions:
            texts[f"bank {bank} {question.id}"] = question.text
            if question.reference:
                texts[f"bank {bank} {question.id} reference"] = question.reference
    for name in builtin_scenarios():
        scenario = load_scenario(name).scenario
        texts[f"scenario {name} description"] = scenario.description or ""
        for group in scenario.agents:
            texts[f"scenario {name} {group.group} persona"] = group.persona
            texts[f"scenario {name} {group.group} reply prefix"] = group.reply_prefix or ""
    for name, value in vars(prompts).items():
        if isinstance(value, str) and not name.startswith("_"):
            texts[f"agents.prompts.{name}"] = value
    return {where: text for where, text in texts.items() if text.strip()}


def test_no_training_text_lies_within_cosine_0_9_of_a_public_row():
    directory = public_sets.evalsets_dir()
    public = [q for s in public_sets.PUBLIC_SETS for q in load_questions(directory / s.file)]
    ours = training_texts()
    assert len(public) == 970 and len(ours) > 600
    encoder = Encoder("minilm-l6")
    similarity = encoder.encode(list(ours.values())) @ encoder.encode([q.text for q in public]).T
    closest = similarity.max(axis=1)
    near = [(where, public[int(similarity[i].argmax())].id, round(float(closest[i]), 3))
            for i, where in enumerate(ours) if closest[i] >= NEAR]
    assert near == [], f"training texts within cosine {NEAR} of a public row (ours, theirs, cosine): {near}"
    assert float(np.max(closest)) > 0.3  # the check compares real embeddings, not noise
