"""Summed log-probabilities of each row's completion tokens, computing logits only where needed.

A (rows x length x vocab) logits tensor dominates training memory for small models with big
vocabularies. transformers' boolean `logits_to_keep` projects only the positions that predict a
completion token, so prompt and padding positions never reach the LM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def completion_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion-token log-probs, number of completion tokens) per row of a collated batch."""
    is_target = batch["completion_mask"][:, 1:].bool()
    # Position t predicts token t+1; the last position predicts nothing.
    keep = F.pad(is_target, (0, 1), value=False)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits.float()
    targets = batch["input_ids"][:, 1:][is_target]
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = keep.nonzero()[:, 0]  # row of each kept position, in the same row-major order
    sums = token_logps.new_zeros(keep.shape[0]).index_add(0, rows, token_logps)
    return sums, is_target.sum(dim=1)
