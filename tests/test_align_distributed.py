"""Data-parallel training on CPU: `torchrun` with two processes (DDP over gloo), the real launcher."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_align_data import SAMPLE_PAIRS, pair_record, write_pairs
from test_align_train import load_metrics

from align import DPOConfig, train_dpo


def test_two_processes_of_two_pairs_train_like_one_process_of_four(tiny_model_dir, tmp_path):
    """Each process takes every other pair, so per step the two shards are the single run's batch;
    DDP averages their gradients, so the weights must match the one-process run's."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", [pair_record(*pair) for pair in SAMPLE_PAIRS[:4] * 2])
    settings = {"lr": 1e-3, "max_steps": 2, "warmup_ratio": 0.0, "seed": 3}
    train_dpo(pairs, tiny_model_dir, tmp_path / "single", DPOConfig(batch_size=4, **settings))

    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    train = ["-m", "socialign.cli", "train", "--data", str(pairs), "--model", tiny_model_dir,
             "--out", str(tmp_path / "ddp"), "--batch-size", "2", "--lr", "1e-3", "--max-steps", "2",
             "--warmup-ratio", "0", "--seed", "3"]
    completed = subprocess.run(
        [*launch, *train], capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("trained 2 steps") == 1  # one summary per launch

    single, ddp = load_metrics(tmp_path / "single"), load_metrics(tmp_path / "ddp")
    assert [row["step"] for row in ddp] == [1, 2]  # one row per step, written by the main process only
    assert [row["epoch"] for row in ddp] == [0.5, 1.0]  # 8 pairs = 2 steps of 2 processes x 2 pairs
    for ours, theirs in zip(ddp, single):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert ours["rewards/margin"] == pytest.approx(theirs["rewards/margin"], abs=1e-4)
    assert single[-1]["rewards/margin"] != 0.0  # the weights did move

    left, right = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "ddp" / "model.safetensors")
    assert left.keys() == right.keys()
    for name in left:
        assert torch.allclose(left[name], right[name], atol=1e-5), name
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-00000002"]
