"""MCTS-DPO: the conservative loss against its formula, step-only loss masking, one-line errors
for bad step rows, and tiny-model iterations end to end (search -> pairs -> training against
the initial model -> exact-answer evaluation paired with the base)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from agents.backends.hf import HFBackend, load_model_and_tokenizer
from agents.chat import ChatRenderer
from align.batching import collate
from align.logprobs import completion_logps
from align.losses import dpo_loss
from align.mcts_dpo import load_steps, tokenize_steps
from formats.rows import StepRow
from socialign.cli import main

PROMPT = [{"role": "user", "content": "Maya has 12 apples and buys 3 more. How many does she have?"}]


def row(**changes) -> dict:
    base = {"prompt": PROMPT, "prefix": "Step 1: Maya starts with 12.\n", "chosen": "Step 2: 12 + 3 = 15.\n",
            "rejected": "Step 2: 12 - 3 = 9.\n", "q_chosen": 1.0, "q_rejected": 0.0, "n_chosen": 3,
            "n_rejected": 1, "meta": {}}
    return {**base, **changes}


def test_label_smoothing_comes_from_visit_counts():
    assert StepRow.model_validate(row()).label_smoothing == 0.25  # 1 / (3 + 1)
    assert StepRow.model_validate(row(n_chosen=1, n_rejected=3)).label_smoothing == 0.5  # capped


def test_conservative_loss_matches_its_formula():
    rows = [StepRow.model_validate(row()), StepRow.model_validate(row(n_chosen=2, n_rejected=2))]
    a = torch.tensor([r.label_smoothing for r in rows])  # 0.25, 0.5
    policy_c, policy_r = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    ref_c, ref_r = torch.tensor([-3.5, -5.0]), torch.tensor([-3.8, -4.0])
    beta = 0.5
    out = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta, label_smoothing=a)
    for i, eps in enumerate([0.25, 0.5]):
        h = (policy_c[i] - ref_c[i]) - (policy_r[i] - ref_r[i])
        sig = 1 / (1 + math.exp(-beta * h))
        expected = -(1 - eps) * math.log(sig) - eps * math.log(1 - sig)
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-6)
    # a = 0.5 pulls the margin to zero: its gradient vanishes there, whatever the direction.
    chosen = torch.tensor([-1.0], requires_grad=True)
    dpo_loss(chosen, torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), beta,
             label_smoothing=torch.tensor([0.5])).loss.backward()
    assert chosen.grad.item() == 0.0


def test_only_the_step_tokens_carry_the_loss(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir, device="cpu", dtype="float32")
    step = StepRow.model_validate(row())
    [pair] = tokenize_steps([step], tokenizer, max_length=1024)
    renderer = ChatRenderer(tokenizer)
    # The prompt and the shared prefix are context: the completion is the step alone, with no end of turn.
    assert pair.prompt_ids == renderer.prompt_ids(PROMPT, step.prefix)
    assert tokenizer.decode(pair.chosen_ids) == step.chosen and tokenizer.decode(pair.rejected_ids) == step.rejected
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") not in pair.chosen_ids + pair.rejected_ids
    assert pair.label_smoothing == 0.25
    # What training sums is exactly the backend's score of the step after prompt + prefix.
    with torch.no_grad():
        logps, lengths = completion_logps(model, collate([pair], tokenizer.pad_token_id))
    backend = HFBackend(tiny_model_dir)
    scored = backend.score([PROMPT, PROMPT], [step.chosen, step.rejected], [step.prefix] * 2, end_of_turn=False)
    assert logps.tolist() == pytest.approx([sum(s) for s in scored], abs=1e-4)
    assert lengths.tolist() == [len(pair.chosen_ids), len(pair.rejected_ids)]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"n_rejected": 0}, "field 'n_rejected' must be an integer >= 1 (visits)"),
        ({"chosen": ""}, "field 'chosen' must be a non-empty string (one step)"),
        ({"rejected": "Step 2: 12 + 3 = 15.\n"}, "chosen and rejected are the same step"),
        ({"q_chosen": "high"}, "field 'q_chosen' must be a finite number"),
    ],
)
def test_bad_step_rows_are_one_line_errors(tmp_path, capsys, change, expected):
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps(row()) + "\n" + json.dumps(row(**change)) + "\n")
    code = main(["train", "--method", "mcts-dpo", "--data", str(path), "--model", "m", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{path}:2:" in err and expected in err and "\n" not in err, err
    assert not (tmp_path / "o").exists()


SCENARIO = """\
name: social-search
seed: 1
questions:
  inline:
    - {{id: q1, text: "How do I apologise to a friend?", expected: answer, reference: "Say sorry sincerely and listen."}}
    - {{id: q2, text: "How can I hack my neighbour's wifi?", expected: decline, reference: "I can't help with that."}}
agents:
  - {{group: solver, count: 1, persona: You help., model: {{name: "{model}"}}}}
mcts: {{trees: 2, simulations: 3, k: 3, step_tokens: 5, max_tokens: 15, max_steps: 3, value: judges,
       delimiters: [sentence, newline]}}
"""
HELDOUT = """\
name: sums
questions: {arithmetic: {train: 2, heldout: 3}}
agents: [{group: solver, count: 1, persona: You solve.}]
"""


def test_iterations_search_train_against_the_initial_model_and_evaluate(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "search.yaml").write_text(SCENARIO.format(model=tiny_model_dir))
    (tmp_path / "sums.yaml").write_text(HELDOUT)
    out = tmp_path / "out"
    code = main(["train", "--method", "mcts-dpo", "--data", str(tmp_path / "search.yaml"), "--model", tiny_model_dir,
                 "--out", str(out), "--iterations", "2", "--problems", "2", "--max-new-tokens", "15",
                 "--eval-scenario", str(tmp_path / "sums.yaml"), "--eval-max-new-tokens", "8", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    for t in (1, 2):
        rows = load_steps(out / f"iter-{t}" / "data.jsonl")  # the iteration's step pairs, in the steps format
        assert rows and all(r.meta["iteration"] == t for r in rows)
        assert (out / f"iter-{t}" / "model" / "model.safetensors").is_file()
    configs = [json.loads((out / f"iter-{t}" / "model" / "train_config.json").read_text())["config"] for t in (1, 2)]
    assert configs[0]["reference_model"] is None  # iteration 1 trains from the initial model: its own reference
    assert configs[1]["reference_model"] == tiny_model_dir  # iteration 2 trains iterate 1 against the initial model
    iterations = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in iterations] == [0, 1, 2]
    assert iterations[0]["eval"]["questions"] == 3 and "accuracy_vs_base" not in iterations[0]["eval"]["metrics"]
    for r in iterations[1:]:
        metrics = r["eval"]["metrics"]
        assert metrics["accuracy"]["n"] == 3 and metrics["accuracy_vs_base"]["n"] == 3
    report = json.loads((out / "iter-2" / "eval.json").read_text())
    assert len(report["problems"]) == 3 and {"id", "answer", "read", "correct", "reply"} <= set(report["problems"][0])
    assert "held-out accuracy" in (out / "iterations.md").read_text()


def test_eval_questions_are_refused(capsys):
    assert main(["train", "--method", "mcts-dpo", "--out", "o", "--eval-questions", "q.jsonl"]) == 2
    assert "not --eval-questions" in capsys.readouterr().err


def test_exported_steps_train_once(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps(row(meta={"i": i})) + "\n" for i in range(2)))
    code = main(["train", "--method", "mcts-dpo", "--data", str(path), "--model", tiny_model_dir,
                 "--out", str(tmp_path / "o"), "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "model.safetensors").is_file() and not (tmp_path / "o" / "iter-1").exists()
    assert Path(tmp_path / "o" / "metrics.jsonl").is_file()
