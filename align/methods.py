"""The training methods: name -> config dataclass, trainer, data. Cheap to import (no torch).

A method registers here and nothing else changes: the CLI offers `--method NAME` with flags
generated from its config (align.flags), and align.run drives the trainer the entry points
to. `trainer` is a "module:Class" path, imported only when training starts, so `--help` and
bad-flag errors stay instant.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from align.config import DPOConfig, MCTSDPOConfig, SFTConfig, SPINConfig, SPOConfig, SPPOConfig, TrainConfig


@dataclass(frozen=True)
class Method:
    name: str
    config: type[TrainConfig]
    trainer: str  # "module:Class" of an align.trainer.Trainer subclass (it loads and tokenizes the data)
    description: str  # one line for `socialign train --help`
    data_help: str  # what --data accepts
    summary: tuple[str, ...] = ("loss",)  # metrics the CLI prints after training
    # "module:NAME" of an align.iterate.IterativeMethod: the method runs iterations (sample with the
    # current iterate, train, evaluate) and `trainer` trains one iteration's data file.
    iterative: str | None = None
    default_data: str | None = None  # what --data is when not given (else it is required)
    # An iterative method whose trainer's own data (a JSONL file, or a run directory's export) may
    # be given as --data instead: then it trains once on that data, with no iterations.
    trains_exports: bool = False
    # Options the method cannot use ("lora", "resume"): no flag is offered for them.
    unsupported: frozenset[str] = frozenset()

    def trainer_class(self):
        return _resolve(self.trainer)

    def iterative_spec(self):
        return _resolve(self.iterative)


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r} (known: {', '.join(sorted(METHODS))})") from None


register_method(
    Method(
        name="dpo",
        config=DPOConfig,
        trainer="align.dpo:PreferenceTrainer",
        description="DPO or IPO on preference pairs, the frozen starting model as reference.",
        data_help="pairs JSONL, or a run directory (uses RUN/export/pairs.jsonl)",
        summary=("loss", "rewards/accuracy"),
    )
)
register_method(
    Method(
        name="sft",
        config=SFTConfig,
        trainer="align.sft:SupervisedTrainer",
        description="Supervised fine-tuning on chat examples, loss on assistant tokens only.",
        data_help=(
            "SFT JSONL ({prompt, completion} or {messages}, TRL's conversational formats), "
            "or a run directory (uses RUN/export/sft.jsonl)"
        ),
    )
)
register_method(
    Method(
        name="spin",
        config=SPINConfig,
        trainer="align.spin:SpinTrainer",
        description=(
            "SPIN self-play: each iteration samples the current model on the training prompts and "
            "trains real vs generated replies with the current model as reference."
        ),
        data_help="SPIN JSONL ({prompt, real, generated}), or a run directory (uses RUN/export/spin.jsonl)",
        summary=("loss", "rewards/accuracy"),
        iterative="align.spin:SPIN",
    )
)
register_method(
    Method(
        name="spo",
        config=SPOConfig,
        trainer="align.spo:SPOTrainer",
        description="SPO, online: K samples per prompt, reward = in-group win rate under the judges, GRPO + KL.",
        data_help=(
            "prompts JSONL ({prompt, expected?, reference?}), or a run directory (uses RUN/export/prompts.jsonl)"
        ),
        summary=("loss", "reward", "kl", "zero_spread_share"),
        unsupported=frozenset({"lora", "resume"}),  # TRL's GRPOTrainer runs it; neither is wired up yet
    )
)
register_method(
    Method(
        name="mcts-dpo",
        config=MCTSDPOConfig,
        trainer="align.mcts_dpo:MCTSDPOTrainer",
        description=(
            "MCTS-DPO: each iteration searches training problems step by step with the current model and "
            "trains conservative DPO on the step pairs (step tokens only), the initial model as reference."
        ),
        data_help=(
            "a scenario (built-in name or YAML) whose training questions have exact answers (default: arithmetic); "
            "or steps JSONL / a run directory (RUN/export/steps.jsonl): one training pass on those pairs"
        ),
        summary=("loss", "rewards/accuracy"),
        iterative="align.mcts_dpo:MCTS_DPO",
        default_data="arithmetic",
        trains_exports=True,
    )
)
register_method(
    Method(
        name="sppo",
        config=SPPOConfig,
        trainer="align.sppo:SPPOTrainer",
        description=(
            "SPPO self-play: each iteration samples K replies per prompt from the current model, estimates "
            "their win probabilities with the judges and fits the next model with the square loss, the "
            "current model as reference."
        ),
        data_help=(
            "prompts JSONL ({prompt, expected?, reference?}), or a run directory (uses RUN/export/prompts.jsonl)"
        ),
        summary=("loss", "rewards/accuracy", "tied"),
        iterative="align.sppo:SPPO",
    )
)
