"""SFT on chat examples: next-token loss on the assistant tokens only, on the trainer skeleton.

Data: the `sft` export ({prompt, completion, meta}), TRL's conversational prompt/completion
rows, or TRL `messages` rows (loss on every assistant turn). Batches group examples of similar
length (align.batching), so padding stays small without packing's cross-example attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from align.batching import collate_examples
from align.config import SFTConfig
from align.data import load_sft, locate_sft
from align.errors import DataError
from align.logprobs import token_logps
from align.losses import sft_loss
from align.run import train
from align.tokenization import TokenizedExample, tokenize_sft
from align.trainer import StepOutput, Trainer, TrainResult


class SupervisedTrainer(Trainer):
    config: SFTConfig
    examples: list[TokenizedExample]
    panels = (
        ("loss", "loss (NLL per assistant token)"),
        ("grad_norm", "gradient norm"),
        ("lr", "learning rate"),
    )

    locate = staticmethod(locate_sft)
    load = staticmethod(load_sft)

    @classmethod
    def tokenize(cls, rows, tokenizer, config: SFTConfig, path: Path) -> list[TokenizedExample]:
        try:
            return tokenize_sft(rows, tokenizer, config.max_length)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None

    def lengths(self) -> list[int] | None:
        return [e.length for e in self.examples] if self.config.group_by_length else None

    def collate(self, examples: list[TokenizedExample]) -> dict[str, torch.Tensor]:
        return collate_examples(examples, self.tokenizer.pad_token_id)

    def share(self, group: list[list[int]], position: int) -> float:
        """compute() returns the micro-batch's token sum over its own tokens; weigh it by its token share."""
        tokens = [sum(self._learned(i) for i in indices) for indices in group]
        return tokens[position] / max(sum(tokens), 1)

    def compute(self, batch: dict[str, torch.Tensor], indices: list[int]) -> StepOutput:
        logps, _ = token_logps(self.model, batch)
        learned = torch.tensor(logps.numel())
        return StepOutput(
            loss=sft_loss(logps, learned.clamp(min=1)),
            metrics={"loss": (-logps.sum(), learned)},
            tokens=int(batch["attention_mask"].sum()),
        )

    def _learned(self, index: int) -> int:
        """Learned tokens of one example (the first token is never a target: nothing predicts it)."""
        return sum(self.examples[index].loss_mask[1:])


def train_sft(
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: SFTConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Train `model` (alias, path or hub id) with SFT on `data` into `out_dir`."""
    return train("sft", data, model, out_dir, config, resume, callbacks)
