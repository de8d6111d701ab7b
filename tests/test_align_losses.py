"""Preference losses: the published formulas, label smoothing, weights, and agreement with TRL 1.16."""

from __future__ import annotations

import math

import pytest
import torch
from test_align_data import SAMPLE_PAIRS, pair_record
from transformers import AutoModelForCausalLM, AutoTokenizer

from align import dpo_loss, ipo_loss, tokenize_pairs
from align.batching import collate
from align.logprobs import completion_logps
from align.losses import with_sft_term
from formats.rows import PreferencePair

# Four pairs of fixed sequence log-probs: policy/reference x chosen/rejected, and completion lengths.
POLICY_CHOSEN = [-12.0, -30.5, -7.25, -50.0]
POLICY_REJECTED = [-14.0, -29.0, -9.5, -41.0]
REF_CHOSEN = [-13.0, -31.0, -7.0, -48.0]
REF_REJECTED = [-13.5, -30.0, -8.0, -44.0]
CHOSEN_LENGTHS = [6, 15, 3, 20]
REJECTED_LENGTHS = [7, 12, 5, 16]
BETA = 0.2


def tensors(*lists):
    return [torch.tensor(values, dtype=torch.float64) for values in lists]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def dpo_by_hand(i: int, beta: float, eps: float = 0.0) -> float:
    """Rafailov et al. eq. 7, with cDPO's flip probability eps (Mitchell 2023)."""
    h = (POLICY_CHOSEN[i] - REF_CHOSEN[i]) - (POLICY_REJECTED[i] - REF_REJECTED[i])
    return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)


def ipo_by_hand(i: int, tau: float) -> float:
    """Azar et al. eq. 17 with per-token (length-averaged) log-ratios."""
    h = (POLICY_CHOSEN[i] - REF_CHOSEN[i]) / CHOSEN_LENGTHS[i] - (
        POLICY_REJECTED[i] - REF_REJECTED[i]
    ) / REJECTED_LENGTHS[i]
    return (h - 1 / (2 * tau)) ** 2


def logps():
    return tensors(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_sigmoid_matches_the_formula(eps):
    out = dpo_loss(*logps(), beta=BETA, label_smoothing=eps)
    assert out.losses.tolist() == pytest.approx([dpo_by_hand(i, BETA, eps) for i in range(4)], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx(
        [BETA * (p - r) for p, r in zip(POLICY_CHOSEN, REF_CHOSEN)]
    )
    assert out.rejected_rewards.tolist() == pytest.approx(
        [BETA * (p - r) for p, r in zip(POLICY_REJECTED, REF_REJECTED)]
    )


def test_ipo_matches_the_formula():
    lengths = tensors(CHOSEN_LENGTHS, REJECTED_LENGTHS)
    out = ipo_loss(*logps(), BETA, *lengths)
    assert out.losses.tolist() == pytest.approx([ipo_by_hand(i, BETA) for i in range(4)], rel=1e-12)


def test_label_smoothing_makes_the_optimal_margin_finite():
    """cDPO's minimiser is at sigmoid(beta h) = 1 - eps: beyond it the loss pushes the margin back down."""
    eps, beta = 0.1, 0.5
    optimum = math.log((1 - eps) / eps) / beta
    margins = torch.tensor([optimum - 1.0, optimum, optimum + 1.0], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros(3, dtype=torch.float64)
    dpo_loss(margins, zeros, zeros, zeros, beta, label_smoothing=eps).losses.sum().backward()
    assert margins.grad[0] < 0 and margins.grad[2] > 0
    assert margins.grad[1].item() == pytest.approx(0.0, abs=1e-12)
    # Without smoothing the loss keeps rewarding a larger margin.
    margins.grad = None
    dpo_loss(margins, zeros, zeros, zeros, beta).losses.sum().backward()
    assert (margins.grad < 0).all()


def test_label_smoothing_can_differ_per_pair():
    eps = torch.tensor([0.0, 0.1, 0.2, 0.4], dtype=torch.float64)
    together = dpo_loss(*logps(), beta=BETA, label_smoothing=eps).losses
    one_by_one = [
        dpo_loss(*logps(), beta=BETA, label_smoothing=e.item()).losses[i] for i, e in enumerate(eps)
    ]
    assert torch.allclose(together, torch.stack(one_by_one))


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_weights_multiply_each_pairs_loss_and_gradient(loss):
    def run(weights):
        policy_chosen = torch.tensor(POLICY_CHOSEN, dtype=torch.float64, requires_grad=True)
        rest = tensors(POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)
        if loss == "ipo":
            out = ipo_loss(
                policy_chosen, *rest, BETA, *tensors(CHOSEN_LENGTHS, REJECTED_LENGTHS), weights=weights
            )
        else:
            out = dpo_loss(policy_chosen, *rest, BETA, weights=weights)
        out.loss.backward()
        return out, policy_chosen.grad

    plain, plain_grad = run(None)
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    weighted, weighted_grad = run(weights)
    assert torch.allclose(weighted.losses, plain.losses * weights)
    assert weighted.loss.item() == pytest.approx((plain.losses * weights).mean().item())
    assert torch.allclose(weighted_grad, plain_grad * weights)
    assert weighted_grad[1] == 0  # a zero-weight pair does not train
    assert torch.equal(weighted.chosen_rewards, plain.chosen_rewards)  # rewards are not weighted


def test_the_sft_term_adds_the_chosen_per_token_nll_to_every_pair():
    lengths = torch.tensor(CHOSEN_LENGTHS, dtype=torch.float64)
    plain = dpo_loss(*logps(), beta=BETA)
    out = with_sft_term(plain, logps()[0], lengths, weight=0.5)
    nll = -sum(POLICY_CHOSEN) / sum(CHOSEN_LENGTHS)
    assert out.losses.tolist() == pytest.approx([dpo_by_hand(i, BETA) + 0.5 * nll for i in range(4)], rel=1e-12)
    assert out.loss.item() == pytest.approx(plain.loss.item() + 0.5 * nll, rel=1e-12)
    assert torch.equal(out.chosen_rewards, plain.chosen_rewards)  # the rewards are the preference term's


# -- agreement with TRL -----------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "sigmoid+sft"])
def test_loss_equals_trl_dpo_trainer_on_the_same_batch(tiny_model_dir, tmp_path, loss):
    """TRL's own DPOTrainer.compute_loss vs ours, same tiny model, same pairs, same fixed reference log-probs.

    This also checks that we tokenize exactly as TRL does and that our completion log-probs
    (logits only at completion positions) equal TRL's fused-LM-head log-probs.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [pair_record(*pair) for pair in SAMPLE_PAIRS]
    sft_weight = 0.5 if loss.endswith("+sft") else 0.0
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type=["sigmoid", "sft"] if sft_weight else [loss],
        loss_weights=[1.0, sft_weight] if sft_weight else None,
        beta=BETA,
        precompute_ref_log_probs=True,  # the batch then carries the reference log-probs we pass
        max_length=None,
        per_device_train_batch_size=len(records),
        use_cpu=True,
        report_to=[],
    )
    trl_trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(
            [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
        ),
        processing_class=tokenizer,
    )
    examples = [trl_trainer.train_dataset[i] for i in range(len(records))]
    ref_chosen, ref_rejected = torch.tensor(REF_CHOSEN), torch.tensor(REF_REJECTED)
    trl_batch = {
        **trl_trainer.data_collator(examples),
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    trl_trainer.model.train()  # TRL logs this batch's rewards under "train" (the model has no dropout)
    trl_loss = trl_trainer.compute_loss(trl_trainer.model, trl_batch)

    pairs = tokenize_pairs([PreferencePair(**r) for r in records], tokenizer, max_length=4096)
    assert [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in pairs] == [
        (e["prompt_ids"], e["chosen_ids"], e["rejected_ids"]) for e in examples
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    sums, lengths = completion_logps(model, collate(pairs, tokenizer.pad_token_id))
    (policy_chosen, policy_rejected), (chosen_lengths, rejected_lengths) = sums.chunk(2), lengths.chunk(2)
    if loss == "ipo":
        ours = ipo_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, BETA, chosen_lengths, rejected_lengths
        )
    else:
        ours = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, BETA)
    if sft_weight:
        ours = with_sft_term(ours, policy_chosen, chosen_lengths, sft_weight)

    assert ours.loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    logged = trl_trainer._metrics["train"]
    assert ours.chosen_rewards.mean().item() == pytest.approx(logged["rewards/chosen"][-1], rel=1e-5)
    assert ours.rejected_rewards.mean().item() == pytest.approx(logged["rewards/rejected"][-1], rel=1e-5)


def test_per_pair_label_smoothing_applies_each_pairs_own_flip_probability():
    eps = [0.0, 0.1, 0.3, 0.45]
    out = dpo_loss(*logps(), beta=BETA, label_smoothing=torch.tensor(eps, dtype=torch.float64))
    assert out.losses.tolist() == pytest.approx([dpo_by_hand(i, BETA, eps[i]) for i in range(4)], rel=1e-12)


def test_trainer_token_logps_sum_to_the_sequence_logps_the_loss_uses(tiny_model_dir, tmp_path):
    """Per-token log-probs of each completion (what MCTS-DPO reads), from a trainer, sum to completion_logps."""
    from align import DPOConfig, PreferenceTrainer, RunDir

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [pair_record(*SAMPLE_PAIRS[0], label_smoothing=0.2), pair_record(*SAMPLE_PAIRS[1])]
    pairs = tokenize_pairs([PreferencePair(**r) for r in records], tokenizer, max_length=4096)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = PreferenceTrainer(model, tokenizer, pairs, DPOConfig(batch_size=2, label_smoothing=0.05), RunDir(tmp_path))
    per_token = trainer.token_logps([0, 1])
    assert [len(t) for t in per_token] == [len(pairs[0].chosen_ids), len(pairs[1].chosen_ids),
                                           len(pairs[0].rejected_ids), len(pairs[1].rejected_ids)]
    with torch.no_grad():
        sums, _ = completion_logps(model, collate(pairs, tokenizer.pad_token_id))
    assert torch.allclose(torch.stack([t.sum() for t in per_token]), sums, atol=1e-5)
    assert all((t < 0).all() for t in per_token)
    trainer.prepare()  # the reference pass; each pair's own label smoothing, else the config's
    assert trainer.smoothing.tolist() == pytest.approx([0.2, 0.05])
    assert torch.allclose(trainer.reference.T.flatten(), sums, atol=1e-5)  # the reference is the start model
