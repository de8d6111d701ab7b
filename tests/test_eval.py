"""Judged evaluation on a tiny model: scores with CIs, pairwise in both orders, report files."""

from __future__ import annotations

import json

import pytest

from align.eval import EvalSettings, evaluate, markdown_table
from scenarios import load_scenario
from socialign.cli import main

SCENARIO = """\
name: tiny-eval
questions: {{bank: social}}
graph: {{generator: cycle}}
agents:
  - {{group: a, count: 3, persona: "You are kind.", model: {{name: "{model}"}}}}
observers: {{model: {{name: "{model}"}}}}
"""


@pytest.fixture(scope="module")
def scenario_file(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "tiny.yaml"
    path.write_text(SCENARIO.format(model=tiny_model_dir))
    return path


def test_self_comparison_is_a_tie_in_both_orders(scenario_file, tiny_model_dir):
    """The same model against itself: identical answers, so order-swapped judging must cancel."""
    report = evaluate(load_scenario(scenario_file), tiny_model_dir, tiny_model_dir,
                      EvalSettings(limit=4, max_new_tokens=8))
    assert report["questions"] == 4
    pairwise = report["pairwise"]
    assert pairwise["n"] == 4 and pairwise["tie_rate"] == 1.0
    assert pairwise["p_model_better"]["mean"] == pytest.approx(0.5, abs=1e-6)
    for role in ("model", "baseline"):
        scores = report["summary"][role]["scores"]
        assert set(scores) == {"alignment", "engagement"}
        assert all(1 <= s["mean"] <= 7 and s["n"] == 4 for s in scores.values())
    assert report["summary"]["model"]["scores"] == report["summary"]["baseline"]["scores"]
    table = markdown_table(report)
    assert "| model vs baseline, n=4 | 0% | 100% | 0% |" in table
    # the judge-free block is computed beside the judged scores, on the same answers
    free = report["judge_free"]["metrics"]
    assert free["words"]["model"]["n"] == 4 and free["words"]["difference"]["mean"] == 0.0
    assert "| length (words) | all (n=4) |" in table


@pytest.mark.slow
def test_two_different_models_get_a_paired_difference_per_dimension(scenario_file, tiny_model_dir):
    """SmolLM2 answers in words where the random model emits nothing, so the pairs differ."""
    report = evaluate(load_scenario(scenario_file), "smollm2-135m-instruct", tiny_model_dir,
                      EvalSettings(limit=4, max_new_tokens=8))
    rows = report["per_question"]
    assert [row["model"]["answer"] for row in rows] != [row["baseline"]["answer"] for row in rows]
    for dimension, stats in report["difference"].items():
        paired = [row["model"]["scores"][dimension] - row["baseline"]["scores"][dimension] for row in rows]
        assert stats["n"] == len(paired) == 4
        assert stats["mean"] == pytest.approx(sum(paired) / 4, abs=1e-4)
        assert stats["mean"] == pytest.approx(
            report["summary"]["model"]["scores"][dimension]["mean"]
            - report["summary"]["baseline"]["scores"][dimension]["mean"],
            abs=1e-3,
        )
    assert "| difference, paired by question | " in markdown_table(report)


def test_eval_command_writes_json_and_markdown(scenario_file, tiny_model_dir, tmp_path, capsys):
    code = main(["eval", "--model", tiny_model_dir, "--scenario", str(scenario_file), "--limit", "2",
                 "--max-new-tokens", "6", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    held_out = {q.id for q in load_scenario(scenario_file).heldout_questions}
    assert {row["id"] for row in report["per_question"]} <= held_out
    assert "| model: " in (tmp_path / "eval.md").read_text()
    assert "held-out questions" in capsys.readouterr().out
