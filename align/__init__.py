"""Training on simulation data: datasets, preference losses, and the DPO trainer.

Public API:
    train_dpo(data, model, out_dir, config=None, resume=False, callbacks=()) -> TrainResult
    TrainConfig, LoraSettings, TrainResult, PreferenceTrainer(model, tokenizer, pairs, config, run_dir)
    dpo_loss, ipo_loss -> PreferenceLoss
    locate_pairs, load_pairs -> list[PreferencePair]; tokenize_pairs, tokenize_pair -> TokenizedPair
    RunDir (output directory: ownership, checkpoints, metrics), DataError

Names load lazily (PEP 562): the CLI imports `align.errors` on every error path, and that must
not pull in torch, transformers and peft (seconds) just to print one line.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "align.errors",
    "LoraSettings": "align.config",
    "PreferenceLoss": "align.losses",
    "PreferencePair": "align.data",
    "PreferenceTrainer": "align.trainer",
    "RunDir": "align.rundir",
    "TokenizedPair": "align.tokenization",
    "TrainConfig": "align.config",
    "TrainResult": "align.trainer",
    "dpo_loss": "align.losses",
    "ipo_loss": "align.losses",
    "load_pairs": "align.data",
    "locate_pairs": "align.data",
    "tokenize_pair": "align.tokenization",
    "tokenize_pairs": "align.tokenization",
    "train_dpo": "align.dpo",
}

__all__ = [
    "DataError",
    "LoraSettings",
    "PreferenceLoss",
    "PreferencePair",
    "PreferenceTrainer",
    "RunDir",
    "TokenizedPair",
    "TrainConfig",
    "TrainResult",
    "dpo_loss",
    "ipo_loss",
    "load_pairs",
    "locate_pairs",
    "tokenize_pair",
    "tokenize_pairs",
    "train_dpo",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'align' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
