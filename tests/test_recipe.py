"""The full recipe end to end on a tiny model: one simulation, SFT/SPIN/DPO, a table; resumes."""

from __future__ import annotations

import json

import pytest

from scenarios.loader import load_bank
from socialign.cli import main
from socialign.recipe import heldout_sample

SCENARIO = """\
name: tiny-recipe
rounds: 1
questions: {{bank: social, per_round: 2}}
graph: {{generator: cycle}}
agents:
  - {{group: a, count: 4, persona: "You are kind.", model: {{name: "{model}"}},
      sampling: {{max_new_tokens: 8}}}}
observers: {{model: {{name: "{model}"}}}}
backscatter: {{peers: 1, max_revisions: 1, reason_tokens: 8}}
export: {{pair_margin: 0.0, reference_questions: 6}}
"""


def test_heldout_sample_is_half_decline_half_answer_across_categories():
    questions = [q for q in load_bank("social").questions if q.split == "heldout"]
    sample = heldout_sample(questions, 40, seed=0)
    assert len(sample) == 40 and len({q.id for q in sample}) == 40
    assert sum(q.expected == "decline" for q in sample) == 20
    assert len({q.category for q in sample if q.expected == "decline"}) >= 10  # spread, not one category
    assert sample == heldout_sample(questions, 40, seed=0)


def test_recipe_trains_every_model_writes_the_table_and_resumes(tiny_model_dir, fake_evalsets, tmp_path, capsys):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SCENARIO.format(model=tiny_model_dir))
    out = tmp_path / "recipe"
    args = ["recipe", "--out", str(out), "--scenario", str(scenario), "--model", tiny_model_dir, "--seeds", "0",
            "--heldout", "6", "--batch-size", "2", "--max-length", "128", "--max-new-tokens", "8",
            "--public", "sample", "--evalsets", str(fake_evalsets), "--extra-max-new-tokens", "2"]
    assert main(args) == 0
    table = capsys.readouterr().out
    result = json.loads((out / "recipe.json").read_text())
    assert result["questions"] == 6 and result["data"]["rows"]["sft"] >= 6
    trained = set(result["reports"])
    assert {"sft", "spin"} <= trained and ("dpo" in trained) == (result["data"]["rows"]["pairs"] > 0)
    for name in ("| base |", "| SFT on references | 0 |", "| SFT → SPIN | 0 |"):
        assert name in table
    decline = result["reports"]["sft"]["0"]["metrics"]["decline_rate"]
    assert decline["model"]["n"] == 3 and "difference" in decline
    # the public sets, for the base and every trained model, paired against the base
    assert set(result["public"]) == {"AdvBench", "XSTest"} and set(result["public"]["XSTest"]) == trained
    over = result["public"]["XSTest"]["sft"]["0"]["metrics"]["over_decline_rate"]
    assert over["model"]["n"] == over["baseline"]["n"] == 100 and "difference" in over
    assert "| model | seed | AdvBench decline | XSTest-unsafe decline | XSTest-safe over-decline |" in table

    answers = {p.name: p.stat().st_mtime_ns for p in (out / "answers").iterdir()}
    weights = (out / "seed-0" / "sft" / "model.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # run again: every step is found done, nothing is redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "answers").iterdir()} == answers
    assert (out / "seed-0" / "sft" / "model.safetensors").stat().st_mtime_ns == weights
    assert json.loads((out / "recipe.json").read_text())["reports"] == result["reports"]


def test_recipe_refuses_bad_numbers_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["recipe", "--out", str(tmp_path), "--heldout", "1"])
    assert exit_info.value.code == 2 and "must be >= 2" in capsys.readouterr().err
