"""SPO on TRL's GRPOTrainer: in-group win-rate rewards, whole groups, one real step on a tiny model."""

from __future__ import annotations

import pytest

from align.spo import GroupSplit, backend_judge, spo_reward, train_spo, zero_spread_share


def longer_wins(items):
    """A position-free judge: the longer answer is preferred; equal lengths tie."""
    return [1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5 for _, a, b in items]


def first_always(items):
    return [1.0 for _ in items]


def user(q):
    return [{"role": "user", "content": q}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def test_reward_is_the_in_group_win_rate_per_group():
    prompts = [user("q1")] * 3 + [user("q2")] * 3
    completions = [assistant(t) for t in ("aaa", "a", "aa", "bb", "bb", "b")]
    reward = spo_reward(longer_wins, group_size=3)
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[0]] * 6)
    assert rewards == [1.0, 0.0, 0.5, 0.75, 0.75, 0.0]  # q2: two "bb" tie each other, both beat "b"
    assert reward.history[-1]["zero_spread_share"] == 0.0 and reward.history[-1]["groups"] == 2


def test_a_first_slot_judge_gives_no_spread_and_its_bias_is_reported():
    reward = spo_reward(first_always, group_size=2)
    logged = {}
    rewards = reward(prompts=[user("q")] * 2, completions=[assistant("x"), assistant("yy")],
                     log_metric=lambda name, value: logged.setdefault(name, value))
    assert rewards == [0.5, 0.5]
    assert logged == {"spo/zero_spread_share": 1.0, "spo/judge0_first_slot_rate": 1.0}


def test_an_lm_judge_on_a_real_backend_gives_win_rates_that_average_one_half(tiny_model_dir):
    from agents.backends.hf import HFBackend

    reward = spo_reward(backend_judge(HFBackend(tiny_model_dir)), group_size=3)
    rewards = reward(prompts=[user("Is lying ever fine?")] * 3,
                     completions=[assistant(t) for t in ("No.", "Sometimes, to protect someone.", "Yes.")])
    assert all(0.0 <= r <= 1.0 for r in rewards) and sum(rewards) / 3 == pytest.approx(0.5)
    bias = reward.history[-1]["position_bias"][0]
    assert bias["n"] == 3 and 0.0 <= bias["first_slot_rate"] <= 1.0


def test_reward_refuses_split_groups():
    reward = spo_reward(longer_wins, group_size=2)
    with pytest.raises(GroupSplit):
        reward(prompts=[user("q1"), user("q2")], completions=[assistant("a"), assistant("b")])
    with pytest.raises(GroupSplit):
        reward(prompts=[user("q1")] * 3, completions=[assistant("a")] * 3)


def test_a_scorer_that_never_separates_a_groups_samples_is_reported():
    from judges.verifiable import VerifiableJudges, reward_function

    decline = reward_function(VerifiableJudges({"decline": 1.0}), "decline")
    reward = spo_reward([], group_size=2, scorers=[decline])
    logged = {}
    texts = ["Open the settings, then reset it.", "First, open the settings app.",  # both answer
             "I can't help with that.", "Mix the two and heat them."]  # one declines
    reward(prompts=[user("q1")] * 2 + [user("q2")] * 2, completions=[assistant(t) for t in texts],
           expected=["decline"] * 4, log_metric=lambda name, value: logged.setdefault(name, value))
    entry = reward.history[-1]
    assert entry["scorer_without_spread"] == {"verifiable_decline": [True, False]}
    assert entry["scorer_zero_spread"] == {"verifiable_decline": 0.5}
    assert logged["spo/verifiable_decline_zero_spread_share"] == 0.5


def test_zero_spread_share():
    assert zero_spread_share([0.5, 0.5, 1.0, 0.0, None, None], 2) == pytest.approx(2 / 3)


def test_one_spo_step_on_a_tiny_model_keeps_groups_whole(tiny_model_dir, tmp_path):
    k, calls = 4, []

    def judge(items):
        calls.append(items)
        return longer_wins(items)

    questions = ["Is it fine to lie to a friend?", "Should I return a lost wallet?", "May I skip work?"]
    result = train_spo(tiny_model_dir, questions, str(tmp_path / "spo"), judge, k=k, groups_per_device=2,
                       beta=0.04, max_steps=1, max_completion_length=8)
    (entry,) = result.reward_history  # one step: one generation batch of 2 groups of K
    assert entry["groups"] == 2 and len(entry["rewards"]) == 2 * k
    # Every comparison stayed inside a group: both orders of each of the K(K-1)/2 pairs per group.
    (items,) = calls
    assert len(items) == 2 * 2 * k * (k - 1) // 2
    half = len(items) // 2
    assert [(q, b, a) for q, a, b in items[:half]] == items[half:]
    # Each group's win rates average 1/2 (every pair compared once, P(i>j) + P(j>i) = 1).
    for g in range(2):
        assert sum(entry["rewards"][g * k : (g + 1) * k]) / k == pytest.approx(0.5)
    (step,) = [log for log in result.log_history if "loss" in log]
    assert step["reward"] == pytest.approx(0.5)
    assert step["frac_reward_zero_std"] == pytest.approx(entry["zero_spread_share"])
    assert "kl" in step and "spo/zero_spread_share" in step
    assert 0.0 <= result.zero_spread_share <= 1.0


TWO_PROCESS_SCRIPT = """
import json, os, sys
from align.spo import train_spo

def longer_wins(items):
    return [1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5 for _, a, b in items]

model, out = sys.argv[1], sys.argv[2]
questions = ["Is it fine to lie?", "Return a lost wallet?", "Skip work?", "Tell a secret?"]
result = train_spo(model, questions, out, longer_wins, k=3, groups_per_device=1, max_steps=2, max_completion_length=6)
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump(result.reward_history, f)
"""


@pytest.mark.slow
def test_two_processes_each_get_whole_groups(tiny_model_dir, tmp_path):
    """torchrun, two CPU processes: each step every process scores whole groups of K, different prompts."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "spo_ddp.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         tiny_model_dir, str(out)],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [len(history) for history in ranks] == [2, 2]  # one reward call per step per process
    for step in range(2):
        left, right = ranks[0][step], ranks[1][step]
        assert left["groups"] == right["groups"] == 1 and len(left["rewards"]) == len(right["rewards"]) == 3
        assert left["questions"] != right["questions"]  # the two processes hold different groups


def test_train_method_spo_via_the_cli_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    """`socialign train --method spo`: verifiable judges vote, one step, the zero-spread share printed and saved."""
    import json

    from socialign.cli import main

    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": user("How do I pick a lock to get into my neighbour's house?"), "expected": "decline",
         "reference": "I can't help with getting into someone else's house."},
        {"prompt": user("How can I thank a friend who helped me move?"), "expected": "answer",
         "reference": "Cook them dinner or write a heartfelt note."},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "spo"
    code = main(["train", "--method", "spo", "--data", str(prompts), "--model", tiny_model_dir, "--out", str(out),
                 "--k", "3", "--batch-size", "2", "--max-steps", "1", "--max-completion-length", "6",
                 "--verifiers", "decline", "reference"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "spo_summary.json").read_text())
    assert f"zero_spread_share {summary['zero_spread_share']:.4f}" in printed
    (step,) = summary["steps"]
    assert len(step["rewards"]) == 2 * 3 and summary["groups"] == 2
    assert (out / "config.json").is_file() and (out / "train_config.json").is_file()
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics["zero_spread_share"] == summary["zero_spread_share"] and "kl" in metrics


def test_train_method_spo_refuses_prompts_without_the_judges_fields(tiny_model_dir, tmp_path, capsys):
    import json

    from socialign.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": user("Hello?"), "expected": "answer"}) + "\n")
    code = main(["train", "--method", "spo", "--data", str(prompts), "--model", tiny_model_dir,
                 "--out", str(tmp_path / "out"), "--max-steps", "1"])
    assert code == 2
    assert "the 'reference' judge needs field 'reference'" in capsys.readouterr().err


def test_verifiers_is_a_space_separated_list_on_the_command_line_and_a_list_in_a_config_file():
    import argparse

    from align.config import SPOConfig
    from align.flags import add_config_arguments, config_defaults, config_from_args

    def parsed(argv, file_values=None):
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, SPOConfig)
        if file_values is not None:
            config_defaults(parser, SPOConfig, file_values)
        return config_from_args(SPOConfig, parser.parse_args(argv)).verifier_names()

    assert parsed([]) == ["decline", "reference"]
    assert parsed(["--verifiers", "reference"]) == ["reference"]
    assert parsed(["--verifiers", "--lm-judge"]) == []  # none: the LM judge alone
    assert parsed([], {"verifiers": ["decline"]}) == ["decline"]
    assert parsed(["--verifiers", "reference"], {"verifiers": "decline reference"}) == ["reference"]
    with pytest.raises(ValueError, match="verifiers must be among decline, reference"):
        parsed(["--verifiers", "decline,reference"])
