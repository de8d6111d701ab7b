"""Preference losses as pure functions of sequence log-probs, so every trainer (DPO, SPIN, SPO,
MCTS-DPO) shares them and tests can check them against the published formulas.

Each returns per-pair losses (already multiplied by the per-pair weights) and the implicit
rewards beta * (log pi - log pi_ref) that DPO-style training reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PreferenceLoss:
    losses: torch.Tensor  # (pairs,), weighted
    chosen_rewards: torch.Tensor  # (pairs,), detached
    rejected_rewards: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The batch loss: the mean over pairs of weight x loss (weights scale, they do not renormalise)."""
        return self.losses.mean()


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    weights: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> PreferenceLoss:
    """DPO (Rafailov et al. 2023) with conservative label smoothing (cDPO, Mitchell 2023).

    With probability `label_smoothing` the preference label is assumed flipped:
    loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). `label_smoothing` may be a
    per-pair tensor (e.g. a judge's uncertainty), which TRL does not offer.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return _weighted(losses, weights, beta, chosen_logratios, rejected_logratios)


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> PreferenceLoss:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2 beta))^2 with h from length-averaged log-ratios.

    Averaging over completion tokens (as TRL does, confirmed with the IPO authors) keeps the
    squared loss from scaling with reply length.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
    losses = (h - 1 / (2 * beta)) ** 2
    return _weighted(losses, weights, beta, chosen_logratios, rejected_logratios)


def spin_loss(
    policy_real_logps: torch.Tensor,
    policy_generated_logps: torch.Tensor,
    opponent_real_logps: torch.Tensor,
    opponent_generated_logps: torch.Tensor,
    beta: float,
    loss: str = "sigmoid",
    weights: torch.Tensor | None = None,
) -> PreferenceLoss:
    """SPIN (Chen et al. 2024, eq. 4.7): tell the data's real reply y from the previous iterate's
    own sample y' for the same prompt x, with the previous iterate p_theta_t as the opponent:

        L = E[ l( beta log p(y|x)/p_t(y|x) - beta log p(y'|x)/p_t(y'|x) ) ]

    with the logistic loss l(u) = log(1 + e^-u) = -log sigmoid(u) (the paper's choice, and DPO's
    sigmoid loss with real as chosen and generated as rejected), or the hinge l(u) = max(0, 1 - u)
    that the authors' trainer also offers (uclaml/SPIN spin/alignment/trainer.py `spin_loss`).
    """
    real_logratios = policy_real_logps - opponent_real_logps
    generated_logratios = policy_generated_logps - opponent_generated_logps
    margin = beta * (real_logratios - generated_logratios)
    if loss == "sigmoid":
        losses = -F.logsigmoid(margin)
    elif loss == "hinge":
        losses = torch.relu(1 - margin)
    else:
        raise ValueError(f"unknown SPIN loss {loss!r} (expected sigmoid or hinge)")
    return _weighted(losses, weights, beta, real_logratios, generated_logratios)


def _weighted(losses, weights, beta, chosen_logratios, rejected_logratios) -> PreferenceLoss:
    if weights is not None:
        losses = losses * weights
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def sft_loss(token_logps: torch.Tensor, num_tokens: int | torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: the negative log-likelihood of the learned (assistant) tokens,

        loss = -(1 / N) sum_t log pi(y_t | y_<t, x)

    summed over this micro-batch's learned tokens and divided by N, the learned tokens of the
    whole optimizer step (so micro-batches weigh by their tokens, as one large batch would).
    """
    return -token_logps.sum() / num_tokens
