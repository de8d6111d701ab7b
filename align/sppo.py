"""SPPO (Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment").

Iteration t samples K responses per prompt from pi_t, estimates each response's win
probability P(y beats pi_t | x) with the judges (its in-group win rate, sandbox.selfplay), and
fits pi_{t+1} by regression of the log-ratio against pi_t onto the centred win probability:

    loss(y) = ( log pi_theta(y|x) / pi_t(y|x)  -  eta * (P(y beats pi_t | x) - 1/2) )^2

(the paper's Algorithm 1, with its approximation log Z_{pi_t}(x) ~ eta/2). The reference is
the previous iterate pi_t, not the initial model.
"""

from __future__ import annotations

import torch

from align.losses import PreferenceLoss


def sppo_response_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, win_probs: torch.Tensor,
                       eta: float) -> torch.Tensor:
    """The paper's per-response loss: (log pi_theta(y|x) - log pi_t(y|x) - eta (P - 1/2))^2."""
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

    i.e. the paper's loss averaged over the two responses kept from each group (the best and
    the worst by win rate). Why this form: each response is regressed onto its OWN estimated
    win probability, exactly as the paper's objective; the authors' other variant
    ("sppo_single") instead gives the rejected response -(P(y_w beats y_l) - 1/2), a
    pairwise probability in place of P(y beats pi_t), which is not the paper's objective.
    The authors estimate P as the mean over all K samples including the response itself (a
    1/2 tie); ours is the mean over the other K-1 (sandbox.selfplay.win_rates), an unbiased
    estimate from independent samples. Their ``beta`` is our 1/eta.

    Implicit rewards are logratio / eta: the policy's current estimate of P - 1/2.
    """
    losses = (
        sppo_response_loss(policy_chosen_logps, ref_chosen_logps, chosen_win_probs, eta)
        + sppo_response_loss(policy_rejected_logps, ref_rejected_logps, rejected_win_probs, eta)
    ) / 2
    if weights is not None:
        losses = losses * weights
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=((policy_chosen_logps - ref_chosen_logps) / eta).detach(),
        rejected_rewards=((policy_rejected_logps - ref_rejected_logps) / eta).detach(),
    )
