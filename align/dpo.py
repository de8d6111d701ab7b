"""DPO and IPO (align.losses) on preference pairs: the preference method on the trainer skeleton.

The reference is the model as loaded (with LoRA: the adapter switched off); its log-probs are
precomputed once. Later preference methods (SPIN, MCTS-DPO) subclass this with their own data
hooks and reuse the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from align.batching import collate
from align.config import DPOConfig
from align.data import load_pairs, locate_pairs
from align.errors import DataError
from align.logprobs import completion_logps
from align.losses import PreferenceLoss, dpo_loss, ipo_loss, with_sft_term
from align.run import train
from align.tokenization import TokenizedPair, tokenize_pairs
from align.trainer import StepOutput, Trainer, TrainResult


def preference_panels(loss: str, margin: str, accuracy: str) -> tuple[tuple[str, str], ...]:
    """A preference method's plotted metrics (every one logs the same three), under its own titles."""
    return (("loss", loss), ("rewards/margin", margin), ("rewards/accuracy", accuracy))


class PreferenceTrainer(Trainer):
    config: DPOConfig
    examples: list[TokenizedPair]
    panels = preference_panels("loss", "reward margin", "reward accuracy")

    locate = staticmethod(locate_pairs)
    load = staticmethod(load_pairs)

    @classmethod
    def tokenize(cls, rows, tokenizer, config: DPOConfig, path: Path) -> list[TokenizedPair]:
        if config.loss != "sigmoid" and any(pair.label_smoothing for pair in rows):
            raise DataError(
                f"{path}: pairs set label_smoothing, which only the sigmoid loss uses (--loss {config.loss})"
            )
        return tokenize_pairs(rows, tokenizer, config.max_length)

    def collate(self, examples: list[TokenizedPair]) -> dict[str, torch.Tensor]:
        return collate(examples, self.tokenizer.pad_token_id)

    def prepare(self) -> None:
        self.reference = self.reference_logps()  # (pairs, 2): chosen, rejected
        self.smoothing = torch.tensor(
            [
                self.config.label_smoothing if pair.label_smoothing is None else pair.label_smoothing
                for pair in self.examples
            ]
        )

    def compute(self, batch: dict[str, torch.Tensor], indices: list[int]) -> StepOutput:
        logps, lengths = completion_logps(self.model, batch)
        where = torch.tensor(indices)
        reference = self.reference[where].to(logps.device)
        out = self.loss(
            *logps.chunk(2),
            reference[:, 0],
            reference[:, 1],
            *lengths.chunk(2),
            batch["weights"],
            self.smoothing[where].to(logps.device),
            where,
        )
        pairs = torch.tensor(len(indices))
        chosen, rejected = out.chosen_rewards, out.rejected_rewards
        return StepOutput(
            loss=out.loss,
            metrics={
                "loss": (out.losses.sum(), pairs),
                "rewards/chosen": (chosen.sum(), pairs),
                "rewards/rejected": (rejected.sum(), pairs),
                "rewards/margin": ((chosen - rejected).sum(), pairs),
                "rewards/accuracy": ((chosen > rejected).sum(), pairs),
            },
            tokens=int(batch["attention_mask"].sum()),
        )

    def loss(
        self,
        policy_chosen: torch.Tensor,
        policy_rejected: torch.Tensor,
        ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor,
        chosen_lengths: torch.Tensor,
        rejected_lengths: torch.Tensor,
        weights: torch.Tensor,
        label_smoothing: torch.Tensor,
        examples: torch.Tensor,
    ) -> PreferenceLoss:
        """The configured preference loss; a method with another objective overrides this
        (``examples``: the batch's example indices, for a method with per-example targets)."""
        logps = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
        if self.config.loss == "ipo":
            out = ipo_loss(*logps, self.config.beta, chosen_lengths, rejected_lengths, weights=weights)
        else:
            out = dpo_loss(*logps, self.config.beta, weights=weights, label_smoothing=label_smoothing)
        if self.config.sft_weight:
            out = with_sft_term(out, policy_chosen, chosen_lengths, self.config.sft_weight)
        return out


def train_dpo(
    data: str | Path,
    model: str,
    out_dir: str | Path,
    config: DPOConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> TrainResult:
    """Train `model` (alias, path or hub id) with DPO/IPO on `data` into `out_dir`."""
    return train("dpo", data, model, out_dir, config, resume, callbacks)
