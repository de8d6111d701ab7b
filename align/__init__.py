"""Training on simulation data: datasets, losses, and one trainer skeleton with a method per
config + loss (DPO/IPO, SFT, SPIN; the registry in align.methods takes more), and the
iteration driver of self-play methods (align.iterate).

Public API:
    train(method, data, model, out_dir, config=None, resume=False, callbacks=()) -> TrainResult
    train_dpo(...), train_sft(...): the same for one method
    TrainConfig (shared options), DPOConfig, SFTConfig, LoraSettings; METHODS, Method, register_method
    Trainer (the loop), PreferenceTrainer (DPO/IPO), SupervisedTrainer (SFT), StepOutput, TrainResult
    dpo_loss, ipo_loss, spin_loss -> PreferenceLoss; sft_loss
    SPINConfig, SpinTrainer, locate_spin, load_spin -> list[SpinRow]; run_iterations(spec, ...), SPIN
    locate_pairs, load_pairs -> list[PreferencePair]; tokenize_pairs, tokenize_pair -> TokenizedPair
    locate_sft, load_sft -> list[SFTExample | SFTConversation]; tokenize_sft -> TokenizedExample
    RunDir (output directory: ownership, checkpoints, metrics), DataError

Names load lazily (PEP 562): the CLI imports `align.errors` on every error path, and that must
not pull in torch, transformers and peft (seconds) just to print one line.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SPINConfig": "align.config",
    "SpinTrainer": "align.spin",
    "SpinRow": "align.spin",
    "SPIN": "align.spin",
    "spin_loss": "align.losses",
    "locate_spin": "align.spin",
    "load_spin": "align.spin",
    "run_iterations": "align.iterate",
    "IterativeMethod": "align.iterate",
    "DPOConfig": "align.config",
    "DataError": "align.errors",
    "LoraSettings": "align.config",
    "METHODS": "align.methods",
    "Method": "align.methods",
    "PreferenceLoss": "align.losses",
    "PreferencePair": "align.data",
    "PreferenceTrainer": "align.dpo",
    "RunDir": "align.rundir",
    "SFTConfig": "align.config",
    "SFTConversation": "align.data",
    "SFTExample": "align.data",
    "StepOutput": "align.trainer",
    "SupervisedTrainer": "align.sft",
    "TokenizedExample": "align.tokenization",
    "TokenizedPair": "align.tokenization",
    "TrainConfig": "align.config",
    "TrainResult": "align.trainer",
    "Trainer": "align.trainer",
    "dpo_loss": "align.losses",
    "ipo_loss": "align.losses",
    "load_pairs": "align.data",
    "load_sft": "align.data",
    "locate_pairs": "align.data",
    "locate_sft": "align.data",
    "register_method": "align.methods",
    "sft_loss": "align.losses",
    "tokenize_pair": "align.tokenization",
    "tokenize_pairs": "align.tokenization",
    "tokenize_sft": "align.tokenization",
    "train": "align.run",
    "train_dpo": "align.dpo",
    "train_sft": "align.sft",
}

__all__ = [
    "METHODS",
    "SPIN",
    "DPOConfig",
    "DataError",
    "IterativeMethod",
    "LoraSettings",
    "Method",
    "PreferenceLoss",
    "PreferencePair",
    "PreferenceTrainer",
    "RunDir",
    "SFTConfig",
    "SFTConversation",
    "SFTExample",
    "SPINConfig",
    "SpinRow",
    "SpinTrainer",
    "StepOutput",
    "SupervisedTrainer",
    "TokenizedExample",
    "TokenizedPair",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "dpo_loss",
    "ipo_loss",
    "load_pairs",
    "load_sft",
    "load_spin",
    "locate_pairs",
    "locate_sft",
    "locate_spin",
    "register_method",
    "run_iterations",
    "sft_loss",
    "spin_loss",
    "tokenize_pair",
    "tokenize_pairs",
    "tokenize_sft",
    "train",
    "train_dpo",
    "train_sft",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'align' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
