"""Which pairs go into which batch on which process, and how a batch becomes tensors.

The order is a pure function of (seed, epoch, rank), not of any RNG state, so a resumed run
replays exactly the batches an uninterrupted run would have seen. Chosen and rejected rows are
stacked into ONE batch (one forward pass for both) and padded to the batch's longest row only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from align.tokenization import TokenizedPair


@dataclass(frozen=True)
class BatchPlan:
    num_pairs: int
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def epoch(self, epoch: int) -> list[list[int]]:
        """This process's batches (pair indices) for one epoch, shuffled by (seed, epoch)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return self._batches(torch.randperm(self.num_pairs, generator=generator).tolist())

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
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(rows):
        length = len(prompt) + len(completion)
        input_ids[row, :length] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :length] = 1
        completion_mask[row, len(prompt) : length] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "weights": torch.tensor([p.weight for p in pairs], dtype=torch.float32),
    }
