"""DPO end to end: pairs file or simulation run in, trained model out.

Cheap checks come first (the data, the output directory) so a mistake fails in a second, not
after the model has loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from agents.backends.hf import load_model_and_tokenizer
from align.config import TrainConfig
from align.data import load_pairs, locate_pairs
from align.rundir import RunDir
from align.tokenization import tokenize_pairs
from align.trainer import PreferenceTrainer, TrainResult


def train_dpo(
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Train `model` (alias, path or hub id) with DPO/IPO on `data` into `out_dir`."""
    config = config or TrainConfig()
    pairs_file = locate_pairs(data)
    pairs = load_pairs(pairs_file)
    run_dir = RunDir(out_dir)
    run_info = {
        "method": "dpo",
        "model": model,
        "data": str(pairs_file.resolve()),
        "data_sha256": _sha256(pairs_file),
        "num_pairs": len(pairs),
        "config": asdict(config),
    }
    run_dir.check_claim(run_info, resume)
    # Loaded on CPU in float32: accelerate places it, and mixed precision comes from `accelerate launch`.
    policy, tokenizer = load_model_and_tokenizer(model, device="cpu", dtype="float32")
    tokenized = tokenize_pairs(pairs, tokenizer, config.max_length)
    run_dir.claim(run_info, resume)  # written only now, so a model that fails to load leaves no trace
    return PreferenceTrainer(policy, tokenizer, tokenized, config, run_dir, callbacks).train(resume=resume)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
