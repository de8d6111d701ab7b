"""Any registered method end to end: data file or simulation run in, trained model out.

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
from align.methods import Method, get_method
from align.rundir import RunDir
from align.trainer import TrainResult


def train(
    method: str | Method,
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Train `model` (alias, path or hub id) with `method` on `data` into `out_dir`."""
    method = get_method(method) if isinstance(method, str) else method
    config = config if config is not None else method.config()
    if not isinstance(config, method.config):
        raise TypeError(
            f"method {method.name} takes a {method.config.__name__}, not a {type(config).__name__}"
        )
    trainer_class = method.trainer_class()
    data_file = trainer_class.locate(data)
    rows = trainer_class.load(data_file)
    run_dir = RunDir(out_dir)
    info = run_info(method, model, data_file, rows, config)
    run_dir.check_claim(info, resume)
    if resume and (finished := run_dir.finished(info)) is not None:
        model_dir, step = finished
        return TrainResult(run_dir.path, model_dir, step, run_dir.read_metrics())
    # Loaded on CPU in float32: accelerate places it, and mixed precision comes from `accelerate launch`.
    policy, tokenizer = load_model_and_tokenizer(model, device="cpu", dtype="float32")
    examples = trainer_class.tokenize(rows, tokenizer, config, data_file)
    run_dir.claim(info, resume)  # written only now, so a model that fails to load leaves no trace
    trainer = trainer_class(policy, tokenizer, examples, config, run_dir, callbacks)
    result = trainer.train(resume=resume)
    run_dir.finish(info, result.model_dir, result.step)
    return result


def run_info(method: Method, model: str, data_file: Path, rows: list, config: TrainConfig) -> dict:
    """What identifies a run in its train_config.json (align.rundir compares it on resume)."""
    return {
        "method": method.name,
        "model": model,
        "data": str(data_file.resolve()),
        "data_sha256": sha256(data_file),
        "num_examples": len(rows),
        "config": asdict(config),
    }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
