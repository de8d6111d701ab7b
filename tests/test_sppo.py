"""The SPPO square loss (Wu et al. 2024) against its formula on fixed log-probs."""

from __future__ import annotations

import pytest
import torch

from align.sppo import sppo_loss, sppo_response_loss

POLICY_CHOSEN = [-12.0, -30.5, -7.25, -50.0]
POLICY_REJECTED = [-14.0, -29.0, -9.5, -41.0]
REF_CHOSEN = [-13.0, -31.0, -7.0, -48.0]
REF_REJECTED = [-13.5, -30.0, -8.0, -44.0]
WIN_CHOSEN = [0.9, 0.75, 0.6, 1.0]
WIN_REJECTED = [0.1, 0.5, 0.4, 0.0]
ETA = 3.0


def tensors(*lists):
    return [torch.tensor(values, dtype=torch.float64) for values in lists]


def by_hand(i: int, eta: float) -> float:
    """Wu et al. Algorithm 1 per response, averaged over the pair (uclaml/SPPO loss_type="sppo")."""
    winner = ((POLICY_CHOSEN[i] - REF_CHOSEN[i]) - eta * (WIN_CHOSEN[i] - 0.5)) ** 2
    loser = ((POLICY_REJECTED[i] - REF_REJECTED[i]) - eta * (WIN_REJECTED[i] - 0.5)) ** 2
    return (winner + loser) / 2


def test_sppo_loss_matches_the_formula():
    out = sppo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, WIN_CHOSEN, WIN_REJECTED),
                    eta=ETA)
    assert out.losses.tolist() == pytest.approx([by_hand(i, ETA) for i in range(4)], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([(p - r) / ETA for p, r in zip(POLICY_CHOSEN, REF_CHOSEN)])
    assert out.rejected_rewards.tolist() == pytest.approx(
        [(p - r) / ETA for p, r in zip(POLICY_REJECTED, REF_REJECTED)]
    )
    weights = torch.tensor([1.0, 0.5, 0.0, 2.0], dtype=torch.float64)
    weighted = sppo_loss(*tensors(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, WIN_CHOSEN,
                                  WIN_REJECTED), eta=ETA, weights=weights)
    assert weighted.losses.tolist() == pytest.approx([w * by_hand(i, ETA) for i, w in enumerate(weights.tolist())])


def test_the_minimiser_sets_each_log_ratio_to_eta_times_the_centred_win_probability():
    """Unlike DPO's margin, each response is pulled to its own target: winners up, losers down."""
    win = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    ref = torch.zeros(3, dtype=torch.float64)
    target = ETA * (win - 0.5)
    for offset, sign in ((-0.5, -1), (0.0, 0), (0.5, 1)):
        policy = (target + offset).clone().requires_grad_(True)
        sppo_response_loss(policy, ref, win, ETA).sum().backward()
        assert torch.sign(policy.grad).tolist() == [sign] * 3
    # A response winning half its games keeps its probability under pi_t.
    assert sppo_response_loss(ref, ref, win, ETA)[1].item() == 0.0
