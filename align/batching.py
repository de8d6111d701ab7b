"""Which examples go into which batch on which process, and how a batch becomes tensors.

The order is a pure function of (seed, epoch, rank), not of any RNG state, so a resumed run
replays exactly the batches an uninterrupted run would have seen. Rows are padded to the
batch's longest row only; with `lengths`, each shuffled window of batches is sorted by length
first and the resulting steps are shuffled (transformers' length-grouped sampling), so a
batch's rows are of similar length and padding is small. A pair's chosen and rejected rows
are stacked into ONE batch (one forward pass for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agents.seeding import derive_seed
from align.tokenization import TokenizedExample, TokenizedPair

GROUP_BATCHES = 16  # batches per length-sorted window: enough to pad little, few enough to stay shuffled


@dataclass(frozen=True)
class BatchPlan:
    num_pairs: int  # examples (pairs, for preference methods)
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    lengths: tuple[int, ...] | None = None  # group batches by these lengths

    def epoch(self, epoch: int) -> list[list[int]]:
        """This process's batches (example indices) for one epoch, shuffled by (seed, epoch)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        order = torch.randperm(self.num_pairs, generator=generator).tolist()
        if self.lengths is None:
            return self._batches(order)
        # Sorted across all processes' rows, so every rank's batch at a step is of similar length
        # too; then the steps are shuffled, or every seed would train short-to-long in the same
        # order (a dataset smaller than one window would ignore the seed altogether).
        step_rows = self.batch_size * self.world_size
        window = step_rows * GROUP_BATCHES
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=self.lengths.__getitem__)
        ]
        steps = [order[start : start + step_rows] for start in range(0, len(order), step_rows)]
        shuffled = torch.randperm(len(steps), generator=generator).tolist()
        return self._batches([i for step in shuffled for i in steps[step]])

    def in_order(self, order: Sequence[int]) -> list[list[int]]:
        """This process's batches over a given order (e.g. sorted by length for a no-grad pass)."""
        return self._batches(list(order))

    @property
    def batches_per_epoch(self) -> int:
        return -(-self._shard_size // self.batch_size)

    @property
    def _shard_size(self) -> int:
        return -(-self.num_pairs // self.world_size)

    def _batches(self, order: list[int]) -> list[list[int]]:
        # Every process must run the same number of forward passes (DDP/FSDP synchronise on
        # them), so the order wraps around until it splits evenly; repeats are harmless.
        padded = (order * self.world_size)[: self._shard_size * self.world_size]
        shard = padded[self.rank :: self.world_size]
        return [shard[i : i + self.batch_size] for i in range(0, len(shard), self.batch_size)]


def collate(pairs: Sequence[TokenizedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected, right-padded to the longest row."""
    chosen, rejected = zip(*(pair.rows() for pair in pairs))
    rows = [
        (prompt + completion, [0] * len(prompt) + [1] * len(completion))
        for prompt, completion in chosen + rejected
    ]
    return {
        **pad_rows(rows, pad_token_id),
        "weights": torch.tensor([p.weight for p in pairs], dtype=torch.float32),
    }


def collate_examples(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One row per SFT example; `completion_mask` marks the learned tokens."""
    return pad_rows([(e.input_ids, e.loss_mask) for e in examples], pad_token_id)


def pad_rows(rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """(ids, loss mask) rows, right-padded to the longest: input_ids, attention_mask, completion_mask."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        completion_mask[row, : len(mask)] = torch.tensor(mask, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
