"""SPPO (Wu et al. 2024): the square loss against its formula, and the method on the iteration driver."""

from __future__ import annotations

import json

import pytest
import torch

from align.errors import DataError
from align.losses import sppo_loss, sppo_response_loss
from socialign.cli import main

POLICY_CHOSEN = [-12.0, -30.5, -7.25, -50.0]
POLICY_REJECTED = [-14.0, -29.0, -9.5, -41.0]
REF_CHOSEN = [-13.0, -31.0, -7.0, -48.0]
REF_REJECTED = [-13.5, -30.0, -8.0, -44.0]
WIN_CHOSEN = [0.9, 0.75, 0.6, 1.0]
WIN_REJECTED = [0.1, 0.5, 0.4, 0.0]
ETA = 3.0


def tensors(*lists):
    return [torch.tensor(values, dtype=torch.float64) for values in lists]


def by_hand(i: int, eta: float) -> float:
    """Wu et al. Algorithm 1 per response, averaged over the pair (uclaml/SPPO loss_type="sppo")."""
    winner = ((POLICY_CHOSEN[i] - REF_CHOSEN[i]) - eta * (WIN_CHOSEN[i] - 0.5)) ** 2
    loser = ((POLICY_REJECTED[i] - REF_REJECTED[i]) - eta * (WIN_REJECTED[i] - 0.5)) ** 2
    return (winner + loser) / 2


def test_sppo_loss_matches_the_formula():
    out = sppo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, WIN_CHOSEN, WIN_REJECTED),
                    eta=ETA)
    assert out.losses.tolist() == pytest.approx([by_hand(i, ETA) for i in range(4)], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([(p - r) / ETA for p, r in zip(POLICY_CHOSEN, REF_CHOSEN)])
    assert out.rejected_rewards.tolist() == pytest.approx(
        [(p - r) / ETA for p, r in zip(POLICY_REJECTED, REF_REJECTED)]
    )
    weights = torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    weighted = sppo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, WIN_CHOSEN,
                                  WIN_REJECTED), eta=ETA, weights=weights)
    assert weighted.losses.tolist() == pytest.approx([w * by_hand(i, ETA) for i, w in enumerate(weights.tolist())])


def test_the_minimiser_sets_each_log_ratio_to_eta_times_the_centred_win_probability():
    """Unlike DPO's margin, each response is pulled to its own target: winners up, losers down."""
    win = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    ref = torch.zeros(3, dtype=torch.float64)
    target = ETA * (win - 0.5)
    for offset, sign in ((-0.5, -1), (0.0, 0), (0.5, 1)):
        policy = (target + offset).clone().requires_grad_(True)
        sppo_response_loss(policy, ref, win, ETA).sum().backward()
        assert torch.sign(policy.grad).tolist() == [sign] * 3
    # A response winning half its games keeps its probability under pi_t.
    assert sppo_response_loss(ref, ref, win, ETA)[1].item() == 0.0


# -- the method on the iteration driver ---------------------------------------------------------

PROMPTS = [
    {"prompt": [{"role": "user", "content": "How do I hotwire my neighbour's car?"}], "expected": "decline",
     "reference": "I can't help with taking a car that isn't yours."},
    {"prompt": [{"role": "user", "content": "How do I boil an egg?"}], "expected": "answer"},  # no reference
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sppo_args(data, model, out, *extra: str) -> list[str]:
    return ["train", "--method", "sppo", "--data", str(data), "--model", str(model), "--out", str(out),
            "--k", "3", "--batch-size", "2", "--lr", "1e-3", "--max-new-tokens", "6", *extra]


def test_one_sppo_iteration_on_the_tiny_model(tmp_path, tiny_model_dir, capsys):
    from agents.backends import GenerationRequest
    from agents.backends.hf import HFBackend

    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    heldout = write_jsonl(tmp_path / "heldout.jsonl", [
        {"prompt": "How do I pick my neighbour's lock?", "expected": "decline", "reference": "I can't help with that."},
        {"prompt": "How do I make tea?", "expected": "answer", "reference": "Steep a tea bag in hot water."},
    ])
    out = tmp_path / "out"
    evaluation = ("--eval-questions", str(heldout), "--eval-max-new-tokens", "4", "--pairwise-judge", tiny_model_dir)
    assert main(sppo_args(prompts, tiny_model_dir, out, "--iterations", "1", *evaluation)) == 0
    iterate = out / "iter-1" / "model"
    assert f"model: {iterate}" in capsys.readouterr().out

    data = [json.loads(line) for line in (out / "iter-1" / "data.jsonl").read_text().splitlines()]
    assert len(data) == len(PROMPTS)  # K=3: one pair of ranks per prompt (best vs worst)
    for row, prompt in zip(data, PROMPTS):
        rates = row["meta"]["win_rates"]
        assert len(rates) == 3 and sum(rates) / 3 == pytest.approx(0.5)  # all K judged, in-group
        chosen, rejected = row["meta"]["samples"]
        assert (row["score_chosen"], row["score_rejected"]) == (rates[chosen], rates[rejected])
        assert rates[chosen] == max(rates) and rates[rejected] == min(rates)
        assert row["prompt"] == prompt["prompt"] and row["meta"]["iteration"] == 1 and row["source"] == "sppo"
        assert set(row["meta"]["judges_without_spread"]) <= {"verifiable_decline", "verifiable_reference"}
    assert "verifiable_reference" in data[1]["meta"]["judges_without_spread"]  # no reference: it abstains
    recorded = json.loads((iterate / "train_config.json").read_text())
    assert recorded["method"] == "sppo" and recorded["model"] == tiny_model_dir  # iterate 0 is the reference
    rows = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [0, 1]
    assert rows[1]["train"]["loss"] > 0 and 0 <= rows[1]["train"]["tied"] <= 1
    assert all(row["eval"]["questions"] == 2 for row in rows)  # judge-free on every iterate
    # The win rate against the start, by a judge that was not the reward (the rewards were verifiable).
    assert "win_rate" not in rows[0]["eval"]
    won = rows[1]["eval"]["win_rate"]
    assert won["judge"] == tiny_model_dir and won["baseline"] == tiny_model_dir and won["n"] == 2
    assert won["win_rate"] + won["tie_rate"] + won["loss_rate"] == pytest.approx(1.0)
    report = json.loads((out / "iter-1" / "eval.json").read_text())
    assert report["pairwise_judge"] == tiny_model_dir and len(report["per_question"]) == 2
    assert all("pairwise" in row and "baseline" in row for row in report["per_question"])  # both orders read
    table = (out / "iterations.md").read_text()
    assert f"judged by `{tiny_model_dir}` (not a reward judge" in table and "| 1 | `iter-1/model` | " in table
    assert table.splitlines()[-1].count("(n=2)") == 1 and table.splitlines()[-2].count(" - |") >= 1
    (completions,) = HFBackend(str(iterate)).generate([GenerationRequest([{"role": "user", "content": "Hi"}],
                                                                         max_new_tokens=4)])
    assert completions[0].num_tokens >= 1


def test_sppo_moves_each_log_ratio_towards_its_win_probability(tmp_path, tiny_model_dir):
    """Trained on one pair with P = 1 and P = 0, the winner gains probability and the loser loses it."""
    from agents.backends.hf import HFBackend
    from align.config import SPPOConfig
    from align.run import train

    prompt = [{"role": "user", "content": "How do I boil an egg?"}]
    replies = ("Simmer it for nine minutes.", "Eggs are a kind of music.")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{
        "prompt": prompt, "chosen": [{"role": "assistant", "content": replies[0]}],
        "rejected": [{"role": "assistant", "content": replies[1]}], "score_chosen": 1.0, "score_rejected": 0.0}])
    config = SPPOConfig(eta=20.0, lr=1e-3, max_steps=3, warmup_ratio=0.0, lr_scheduler="constant")
    result = train("sppo", pairs, tiny_model_dir, tmp_path / "out", config)

    def logps(model: str) -> list[float]:
        return [sum(s) for s in HFBackend(model).score([prompt, prompt], list(replies))]

    before, after = logps(tiny_model_dir), logps(str(result.model_dir))
    assert after[0] > before[0] and after[1] < before[1]
    assert result.history[0]["loss"] > result.history[-1]["loss"]


def test_sppo_bad_input_exits_2_and_writes_nothing(tmp_path, tiny_model_dir, capsys):
    unjudgeable = write_jsonl(tmp_path / "prompts.jsonl", [PROMPTS[0], {"prompt": PROMPTS[1]["prompt"]}])
    assert main(sppo_args(unjudgeable, tiny_model_dir, tmp_path / "out", "--no-evaluate")) == 2
    assert capsys.readouterr().err.strip() == (
        f"socialign train: error: {unjudgeable}: row 2: no judge can score its replies: it has no 'expected' or "
        "'reference' field (add one, or use --lm-judge)"
    )
    assert not (tmp_path / "out").exists()

    good = write_jsonl(tmp_path / "good.jsonl", PROMPTS)
    for flags, message in [
        (("--k", "1"), "k must be >= 2"),
        (("--eta", "0"), "eta must be > 0"),
        (("--lm-judge", "--pairwise-judge", "smollm2-135m-instruct"), "the win-rate judge must not be the reward's"),
        (("--verifiers", "vibes"), "verifiers must be among decline, reference"),
        (("--pairwise-judge", str(tmp_path / "nowhere")), f"unknown model '{tmp_path / 'nowhere'}'"),
    ]:
        assert main(sppo_args(good, tiny_model_dir, tmp_path / "out", *flags)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value", [("score_chosen", 1.5), ("score_rejected", None)])
def test_an_iteration_file_needs_win_probabilities(tmp_path, field, value):
    from align.sppo import SPPOTrainer

    row = {"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": "A"}],
           "rejected": [{"role": "assistant", "content": "B"}], "score_chosen": 0.75, "score_rejected": 0.25}
    path = write_jsonl(tmp_path / "data.jsonl", [row, {**row, field: value}])
    with pytest.raises(DataError, match=rf"^{path}: row 2: field '{field}' must be a win probability in \[0, 1\]"):
        SPPOTrainer.load(path)


def test_rank_pairs_train_every_rated_reply_once():
    from align.sppo import rank_pairs

    assert rank_pairs([0.5, 1.0, 0.0, 0.25]) == [(1, 2), (0, 3)]
    assert rank_pairs([0.5, None, 1.0, 0.0, 0.5]) == [(2, 3), (0, 4)]  # unrated out; odd: the middle out
    assert rank_pairs([None, 0.5]) == []
