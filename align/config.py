"""Training options as plain data, one dataclass per method on a shared base.

Cheap to import (no torch): the CLI generates its flags from these fields (align.flags), so a
field's type, default and `help` metadata are the whole definition of an option. Stored
verbatim in train_config.json to recognise a run on resume. A method's config extends
TrainConfig and adds its own `checks()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from scenarios.schema import QUESTION_FIELD

Loss = Literal["sigmoid", "ipo"]
SpinLoss = Literal["sigmoid", "hinge"]
Scheduler = Literal["linear", "cosine", "constant"]
Precision = Literal["auto", "no", "bf16", "fp16"]
LOSSES = get_args(Loss)
SPIN_LOSSES = get_args(SpinLoss)
SCHEDULERS = get_args(Scheduler)
DEFAULT_LR = {"full": 5e-6, "lora": 5e-5}  # adapters need a larger step to move as far


# Upper bounds: values past these cannot run on one machine (a typo, not a setting).
MAX_LORA_RANK = 4096
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536
MAX_LENGTH = 1_048_576


@dataclass
class LoraSettings:
    """LoRA adapter (PEFT); the adapter is saved, plus a merged model."""

    r: int = field(default=16, metadata={"help": "rank"})
    alpha: int = field(default=32, metadata={"help": "scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter's input"})
    # PEFT's "all-linear": every attention and MLP projection, whatever the architecture calls them.
    target_modules: str = field(
        default="all-linear", metadata={"help": "'all-linear', or a regex matching module names (PEFT)"}
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.r >= 1 and self.alpha > 0, "LoRA rank and alpha must be positive"),
            (self.r <= MAX_LORA_RANK, f"LoRA rank must be <= {MAX_LORA_RANK}"),
            (0 <= self.dropout < 1, "LoRA dropout must be in [0, 1)"),
        ]


@dataclass
class TrainConfig:
    """Optimisation, checkpoints and LoRA: what every method shares."""

    lr: float | None = field(
        default=None,
        metadata={
            "help": f"learning rate (default: {DEFAULT_LR['full']:g}; {DEFAULT_LR['lora']:g} with --lora)"
        },
    )
    epochs: int = field(default=1, metadata={"help": "passes over the data"})
    max_steps: int | None = field(
        default=None, metadata={"help": "optimizer steps; overrides --epochs (cycles through the data)"}
    )
    batch_size: int = field(default=8, metadata={"help": "examples per device per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(
        default=1024,
        metadata={"help": "tokens per prompt + completion (the prompt is cut from the left first)"},
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "fraction of the steps with a rising learning rate"}
    )
    lr_scheduler: Scheduler = field(
        default="linear", metadata={"help": "learning-rate schedule after warmup"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm to this"})
    seed: int = field(default=0, metadata={"help": "seed of the batch order, dropout and initialisation"})
    mixed_precision: Precision = field(
        default="auto",
        metadata={"help": "autocast precision of the forward pass (weights and optimizer stay fp32); 'auto' "
                  "takes `accelerate launch`'s setting, else fp32. bf16 also runs faster on CPUs with AVX-512 "
                  "BF16 or AMX (bench/precision.py)"},
    )
    save_steps: int = field(
        default=200, metadata={"help": "checkpoint every N steps, and always at the last"}
    )
    lora: LoraSettings | None = field(
        default=None, metadata={"help": "train a LoRA adapter instead of all weights"}
    )

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = DEFAULT_LR["lora" if self.lora else "full"]
        problems = [message for ok, message in self.checks() if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs; a subclass extends the list with its own."""
        return [
            (self.lr > 0, "learning rate must be > 0"),
            (1 <= self.epochs <= MAX_STEPS, f"epochs must be in [1, {MAX_STEPS:,}]"),
            (self.max_steps is None or 1 <= self.max_steps <= MAX_STEPS, f"max steps must be in [1, {MAX_STEPS:,}]"),
            (self.batch_size <= MAX_BATCH and self.grad_accum <= MAX_BATCH,
             f"batch size and gradient accumulation must be <= {MAX_BATCH:,}"),
            (self.max_length <= MAX_LENGTH, f"max length must be <= {MAX_LENGTH:,}"),
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
            *(self.lora.checks() if self.lora else []),
        ]


@dataclass
class DPOConfig(TrainConfig):
    """DPO (sigmoid) or IPO on preference pairs, against the frozen starting model."""

    beta: float = field(default=0.1, metadata={"help": "pull towards the reference model"})
    loss: Loss = field(default="sigmoid", metadata={"help": "DPO's sigmoid loss, or IPO's squared loss"})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "cDPO flip probability, sigmoid only (a pair's own label_smoothing field wins)"},
    )
    sft_weight: float = field(
        default=0.0,
        metadata={"help": "weight of an SFT term (the chosen replies' per-token NLL) added to the preference loss "
                  "(RPO; TRL's loss_type [..., 'sft'] with loss_weights): keeps chosen replies likely"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.beta > 0, "beta must be > 0"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (self.sft_weight >= 0, "sft weight must be >= 0"),
            (0 <= self.label_smoothing < 0.5, "label smoothing must be in [0, 0.5)"),
            (
                self.label_smoothing == 0 or self.loss == "sigmoid",
                "label smoothing applies to the sigmoid loss only",
            ),
            *super().checks(),
        ]


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning: next-token loss on the assistant tokens only."""

    lr: float | None = field(
        default=None,
        metadata={
            "help": f"learning rate (default: {DEFAULT_LR['full'] * 4:g}; {DEFAULT_LR['lora'] * 4:g} with --lora)"
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "batch examples of similar length together (little padding; the order is still shuffled)"
        },
    )

    def __post_init__(self) -> None:
        if self.lr is None:  # imitation tolerates larger steps than preference training
            self.lr = 4 * DEFAULT_LR["lora" if self.lora else "full"]
        super().__post_init__()


@dataclass
class IterationSettings:
    """Iterations: how many, how the current iterate samples its data, how each iterate is evaluated.

    Shared by every iterative method (SPIN, SPPO; later MCTS-DPO)."""

    iterations: int = field(default=1, metadata={"help": "iterations: sample with the current iterate, train, evaluate"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the iterate's replies"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of the iterate's replies"})
    max_new_tokens: int = field(default=128, metadata={"help": "token budget of each sampled reply"})
    evaluate: bool = field(default=True, metadata={"help": "evaluate every iterate judge-free on held-out questions"})
    eval_scenario: str = field(
        default="classic", metadata={"help": "scenario whose held-out questions (and embedder) evaluate each iterate"}
    )
    eval_questions: str | None = field(
        default=None, metadata={"help": "evaluate on this question file (bank YAML, JSONL, CSV) instead"}
    )
    eval_limit: int | None = field(default=120, metadata={"help": "evaluate on at most this many questions (seeded sample)"})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "token budget of each evaluation answer"})
    pairwise_judge: str | None = field(
        default=None,
        metadata={"help": "also judge each iterate against the starting model with this LM (both orders); "
                          "slow, and a 135M judge is mostly noise"},
    )

    def iteration_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.iterations >= 1, "iterations must be >= 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.max_new_tokens >= 1 and self.eval_max_new_tokens >= 1, "token budgets must be >= 1"),
            (self.eval_limit is None or self.eval_limit >= 1, "eval limit must be >= 1"),
        ]


@dataclass
class SPINConfig(IterationSettings, TrainConfig):
    """SPIN: each iteration trains the data's real replies against the previous iterate's own."""

    beta: float = field(default=0.1, metadata={"help": "pull towards the previous iterate (the paper's lambda)"})
    loss: SpinLoss = field(default="sigmoid", metadata={"help": "the paper's logistic loss, or the hinge"})
    keep_previous: bool = field(
        default=True, metadata={"help": "also train on the previous iteration's generated replies, as the paper does"}
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.beta > 0, "beta must be > 0"),
            (self.loss in SPIN_LOSSES, f"loss must be one of {', '.join(SPIN_LOSSES)}"),
            *self.iteration_checks(),
            *super().checks(),
        ]


@dataclass
class JudgeSettings:
    """The judges of a self-play method's win rates: the verifiable ones vote, the LM judge reads both orders."""

    verifiers: tuple[str, ...] = field(
        default=tuple(QUESTION_FIELD),
        metadata={"help": f"verifiable judges that vote, space-separated (of {' '.join(QUESTION_FIELD)}; "
                          "none: the flag alone)"},
    )
    lm_judge: bool = field(default=False, metadata={"help": "the LM pairwise judge votes too (both orders)"})
    judge_model: str = field(default="smollm2-135m-instruct", metadata={"help": "the LM judge's model"})

    def verifier_names(self) -> list[str]:
        return list(self.verifiers)

    def judge_checks(self) -> list[tuple[bool, str]]:
        known = tuple(QUESTION_FIELD)
        return [
            (all(n in known for n in self.verifier_names()), f"verifiers must be among {', '.join(known)}"),
            (bool(self.verifier_names()) or self.lm_judge, "a win rate needs a judge: --verifiers and/or --lm-judge"),
        ]


@dataclass
class SPOConfig(JudgeSettings, TrainConfig):
    """SPO (Swamy et al. 2024), online: reward = in-group win rate of K samples, GRPO with a KL term."""

    lr: float | None = field(default=None, metadata={"help": f"learning rate (default: {DEFAULT_LR['full']:g})"})
    k: int = field(default=4, metadata={"help": "samples per prompt (a group, never split across processes)"})
    batch_size: int = field(default=2, metadata={"help": "groups (prompts) per device per step"})
    beta: float = field(default=0.04, metadata={"help": "KL pull towards the starting model"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the K samples"})
    max_completion_length: int = field(default=64, metadata={"help": "tokens per sample"})

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.k >= 2, "k must be >= 2 (a win rate needs opponents)"),
            (self.beta >= 0, "beta must be >= 0"),
            *self.judge_checks(),
            (self.temperature > 0, "temperature must be > 0"),
            (self.max_completion_length >= 1, "max completion length must be >= 1"),
            (self.lora is None, "LoRA is not supported by --method spo yet"),
            *super().checks(),
        ]


@dataclass
class SPPOConfig(JudgeSettings, IterationSettings, TrainConfig):
    """SPPO (Wu et al. 2024): each iteration regresses the log-ratio to the previous iterate onto
    eta x (win probability - 1/2) of K samples per prompt, judged by the sandbox's judges."""

    k: int = field(default=4, metadata={"help": "samples per training prompt, all kept (every pair of ranks trained)"})
    eta: float = field(
        default=1000.0,
        metadata={"help": "the paper's eta: target log-ratio eta (P - 1/2); the authors' beta is 1/eta (0.001)"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.k >= 2, "k must be >= 2 (a win probability needs opponents)"),
            (self.eta > 0, "eta must be > 0"),
            *self.judge_checks(),
            (
                not (self.lm_judge and self.pairwise_judge == self.judge_model),
                "the win-rate judge must not be the reward's LM judge (--judge-model)",
            ),
            *self.iteration_checks(),
            *super().checks(),
        ]


@dataclass
class MCTSDPOConfig(IterationSettings, TrainConfig):
    """MCTS-DPO: each iteration searches training problems with the current iterate (the data
    scenario's `mcts` settings) and trains conservative DPO on the step pairs, on step tokens only,
    with the initial model as the frozen reference."""

    beta: float = field(default=0.1, metadata={"help": "pull towards the reference (the initial model)"})
    problems: int = field(default=16, metadata={"help": "training problems searched per iteration (one tree each)"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature of the candidate steps"})
    max_new_tokens: int = field(default=160, metadata={"help": "token budget of a searched reply"})
    eval_scenario: str = field(
        default="arithmetic", metadata={"help": "scenario whose held-out problems (exact answers) evaluate each iterate"}
    )
    eval_limit: int | None = field(default=40, metadata={"help": "evaluate on at most this many held-out problems"})
    eval_max_new_tokens: int = field(default=200, metadata={"help": "token budget of each evaluation answer"})
    reference_model: str | None = field(
        default=None,
        metadata={"help": "frozen reference (default: the model as loaded; iterations set the initial model)"},
    )

    def checks(self) -> list[tuple[bool, str]]:
        return [
            (self.beta > 0, "beta must be > 0"),
            (1 <= self.problems <= 100_000, "problems must be in [1, 100,000]"),
            (self.temperature > 0, "temperature must be > 0 (the search samples k distinct steps)"),
            (self.eval_questions is None,
             "mcts-dpo evaluates exact answers on --eval-scenario's held-out problems, not --eval-questions"),
            (self.pairwise_judge is None, "mcts-dpo evaluates exact answers; --pairwise-judge is for SPIN and SPPO"),
            *self.iteration_checks(),
            *super().checks(),
        ]
