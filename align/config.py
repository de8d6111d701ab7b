"""Training options as plain data: cheap to import (the CLI builds its flags from the defaults)
and stored verbatim in train_config.json to recognise a run on resume."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("sigmoid", "ipo")
SCHEDULERS = ("linear", "cosine", "constant")
DEFAULT_LR = {"full": 5e-6, "lora": 5e-5}  # adapters need a larger step to move as far


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # PEFT's "all-linear": every attention and MLP projection, whatever the architecture calls them.
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainConfig:
    beta: float = 0.1
    loss: str = "sigmoid"
    label_smoothing: float = 0.0
    lr: float | None = None  # None: DEFAULT_LR for full fine-tuning or LoRA
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs (cycles through the data as needed)
    batch_size: int = 8  # pairs per micro-batch per process
    grad_accum: int = 1
    max_length: int = 1024
    warmup_ratio: float = 0.1
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_steps: int = 200  # a checkpoint is also always written at the last step
    lora: LoraSettings | None = None

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR["lora" if self.lora else "full"]
        checks = [
            (self.beta > 0, "beta must be > 0"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (0 <= self.label_smoothing < 0.5, "label smoothing must be in [0, 0.5)"),
            (
                self.label_smoothing == 0 or self.loss == "sigmoid",
                "label smoothing applies to the sigmoid loss only",
            ),
            (self.lr > 0, "learning rate must be > 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max steps must be >= 1"),
            (
                self.batch_size >= 1 and self.grad_accum >= 1,
                "batch size and gradient accumulation must be >= 1",
            ),
            (self.max_length >= 8, "max length must be >= 8"),
            (0 <= self.warmup_ratio < 1, "warmup ratio must be in [0, 1)"),
            (self.lr_scheduler in SCHEDULERS, f"lr scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "max grad norm must be > 0"),
            (self.save_steps >= 1, "save steps must be >= 1"),
        ]
        if self.lora:
            checks += [
                (self.lora.r >= 1 and self.lora.alpha > 0, "LoRA rank and alpha must be positive"),
                (0 <= self.lora.dropout < 1, "LoRA dropout must be in [0, 1)"),
            ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))
