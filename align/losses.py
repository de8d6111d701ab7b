"""Preference losses as pure functions of sequence log-probs, so every trainer (DPO, SPIN, SPPO,
MCTS-DPO) shares them and tests can check them against the published formulas.

Each returns per-pair losses (already multiplied by the per-pair weights) and the implicit
rewards beta * (log pi - log pi_ref) that DPO-style training reports.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


def sppo_response_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, win_probs: torch.Tensor,
                       eta: float) -> torch.Tensor:
    """SPPO (Wu et al. 2024, "Self-Play Preference Optimization", Algorithm 1) per response:

        loss(y) = ( log pi_theta(y|x) / pi_t(y|x)  -  eta * (P(y beats pi_t | x) - 1/2) )^2

    a regression of the log-ratio against the previous iterate pi_t onto the centred win
    probability (with the paper's approximation log Z_{pi_t}(x) ~ eta/2). The reference is the
    previous iterate, not the initial model.
    """
    return (policy_logps - ref_logps - eta * (win_probs - 0.5)) ** 2


def sppo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_win_probs: torch.Tensor,
    rejected_win_probs: torch.Tensor,
    eta: float,
    weights: torch.Tensor | None = None,
) -> PreferenceLoss:
    """SPPO on (chosen, rejected) pairs, the authors' form (uclaml/SPPO ``loss_type="sppo"``):

        loss = ( loss(y_w) + loss(y_l) ) / 2,   loss(y) = sppo_response_loss(y) with that y's own P

    i.e. the paper's loss averaged over the pair's two responses (align.sppo pairs a group's
    K samples best with worst, second with second-worst, ..., so every sample is learned
    once). Why this form: each response is regressed onto its OWN estimated
    win probability, exactly as the paper's objective; the authors' other variant
    ("sppo_single") instead gives the rejected response -(P(y_w beats y_l) - 1/2), a
    pairwise probability in place of P(y beats pi_t), which is not the paper's objective.
    The authors estimate P as the mean over all K samples including the response itself (a
    1/2 tie); ours is the mean over the other K-1 (judges.preference.win_rates), an unbiased
    estimate from independent samples. Their ``beta`` is our 1/eta.

    Implicit rewards are logratio / eta: the policy's current estimate of P - 1/2.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = (
        sppo_response_loss(policy_chosen_logps, ref_chosen_logps, chosen_win_probs, eta)
        + sppo_response_loss(policy_rejected_logps, ref_rejected_logps, rejected_win_probs, eta)
    ) / 2
    return _weighted(losses, weights, 1 / eta, chosen_logratios, rejected_logratios)


def _weighted(losses, weights, beta, chosen_logratios, rejected_logratios) -> PreferenceLoss:
    if weights is not None:
        losses = losses * weights
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def with_sft_term(out: PreferenceLoss, policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor,
                  weight: float) -> PreferenceLoss:
    """``out`` plus ``weight`` x the chosen replies' per-token NLL over the batch (RPO, Pang et al.
    2024), as TRL's DPO adds it for ``loss_type=[..., "sft"]``: every pair carries the batch's term,
    so the batch loss is the preference mean plus ``weight`` x NLL."""
    nll = sft_loss(policy_chosen_logps, chosen_lengths.sum())
    return replace(out, losses=out.losses + weight * nll)


def sft_loss(token_logps: torch.Tensor, num_tokens: int | torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: the negative log-likelihood of the learned (assistant) tokens,

        loss = -(1 / N) sum_t log pi(y_t | y_<t, x)

    summed over this micro-batch's learned tokens and divided by N, the learned tokens of the
    whole optimizer step (so micro-batches weigh by their tokens, as one large batch would).
    """
    return -token_logps.sum() / num_tokens
