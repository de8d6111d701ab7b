"""Log-probabilities of each row's completion tokens, computing logits only where needed.

A (rows x length x vocab) logits tensor dominates training memory for small models with big
vocabularies. transformers' boolean `logits_to_keep` projects only the positions that predict a
completion token, so prompt and padding positions never reach the LM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every completion token (flat, row-major) and the row each belongs to."""
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
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return logps, keep.nonzero()[:, 0]  # kept positions come in the same row-major order


def completion_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion-token log-probs, number of completion tokens) per row of a collated batch."""
    logps, rows = token_logps(model, batch)
    sums = logps.new_zeros(batch["input_ids"].shape[0]).index_add(0, rows, logps)
    return sums, batch["completion_mask"][:, 1:].sum(dim=1)


def per_row(logps: torch.Tensor, rows: torch.Tensor, num_rows: int) -> list[torch.Tensor]:
    """Split flat token log-probs into one tensor per row (in completion order)."""
    counts = torch.bincount(rows, minlength=num_rows).tolist()
    return list(logps.split(counts))
