"""SPO (Swamy et al. 2024, "A Minimaximalist Approach to RLHF"), online, on TRL's GRPOTrainer.

For each prompt the current policy samples a group of K; each sample's reward is its in-group
win rate under the judges (the mean over the other K-1 of P(win), both orders, position bias
removed: sandbox.selfplay); GRPO's group-relative advantage (r - mean_group) / std_group with
a KL term (``beta``) is the policy gradient.

How TRL 1.16 keeps a group together (read in trl/trainer/grpo_trainer.py and utils.py):
``RepeatSampler`` yields each prompt index ``num_generations`` times in a row, and each
process takes contiguous slices of ``per_device_train_batch_size * steps_per_generation``
rows; a reward function therefore sees its process's groups as consecutive runs of K rows.
A group straddles two processes whenever that slice is not a multiple of K (TRL then
gathers rewards before normalising, which is fine for pointwise rewards but not for ours,
which compare the K samples with each other). ``train_spo`` makes the slice a multiple of K,
and the reward function refuses any batch that is not whole groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agents.backends import Backend
from agents.prompts import pairwise_messages
from align.processes import cpu_process_group
from sandbox.judging import first_preferred
from sandbox.selfplay import DEFAULT_CRITERION, debias, position_bias, win_rates

# (question, first answer, second answer) for each item -> P(the judge prefers the first); one batched call.
PairwiseJudgeFn = Callable[[list[tuple[str, str, str]]], list[float | None]]


class GroupSplit(ValueError):
    """The reward function was given rows that are not whole groups of K consecutive samples."""


def backend_judge(backend: Backend, criterion: str = DEFAULT_CRITERION) -> PairwiseJudgeFn:
    """An LM judge on any backend: P("1") vs P("2") after the pairwise prompt, all items in one call."""
    def judge(items: list[tuple[str, str, str]]) -> list[float | None]:
        distributions = backend.next_token_logprobs([pairwise_messages(q, a, b, criterion) for q, a, b in items],
                                                    ["1", "2"])
        return [first_preferred(d) for d in distributions]

    return judge


def zero_spread_share(rewards: Sequence[float | None], group_size: int) -> float:
    """The share of groups whose K rewards are all equal: GRPO's advantage is 0 there, no signal."""
    grouped = np.asarray([math.nan if r is None else r for r in rewards], dtype=float).reshape(-1, group_size)
    if not grouped.size:
        return 0.0
    unread = np.isnan(grouped)  # unscorable samples are left out; an all-unscorable group has no spread
    spread = np.where(unread, -np.inf, grouped).max(axis=1) - np.where(unread, np.inf, grouped).min(axis=1)
    return float(np.mean(~(spread > 1e-9)))


def _text(message_or_text) -> str:
    """A completion or prompt as text: the last message's content if conversational."""
    return message_or_text[-1]["content"] if isinstance(message_or_text, list) else message_or_text


class SPOReward:
    """In-group win rates in GRPOTrainer's reward signature ``(prompts, completions, **kwargs)``.

    ``history`` keeps, per call, the groups' rewards, the share with no spread, and each
    judge's position bias (also sent to TRL's ``log_metric``, so they land in the run's logs).
    """

    def __init__(self, judges: Sequence[PairwiseJudgeFn], group_size: int) -> None:
        self.judges = list(judges)
        self.group_size = group_size
        self.history: list[dict] = []
        self.__name__ = "spo_win_rate"  # TRL names the reward's metrics after it

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        k = self.group_size
        questions, answers = [_text(p) for p in prompts], [_text(c).strip() for c in completions]
        if len(prompts) % k or any(len({str(p) for p in prompts[g : g + k]}) != 1 for g in range(0, len(prompts), k)):
            raise GroupSplit(f"the reward needs whole groups of {k} consecutive completions of one prompt, "
                             f"got {len(prompts)} rows that are not")
        first, second = np.triu_indices(k, 1)
        starts = np.arange(0, len(prompts), k)
        a, b = (starts[:, None] + first).ravel(), (starts[:, None] + second).ravel()
        forward = [(questions[i], answers[i], answers[j]) for i, j in zip(a, b)]
        backward = [(q, y, x) for q, x, y in forward]
        outcomes, biases = [], []
        for judge in self.judges:
            reads = np.array([math.nan if p is None else p for p in judge(forward + backward)], dtype=float)
            outcomes.append(debias(reads[: len(forward)], reads[len(forward) :])[0].reshape(len(starts), -1))
            biases.append(position_bias(reads[: len(forward)], reads[len(forward) :]))
        rewards: list[float | None] = []
        for g in range(len(starts)):
            p = np.concatenate([o[g] for o in outcomes])
            rates = win_rates(k, np.tile(first, len(outcomes)), np.tile(second, len(outcomes)), p)
            rewards += [None if math.isnan(r) else float(r) for r in rates]
        entry = {"groups": len(starts), "questions": [questions[s] for s in starts], "rewards": rewards,
                 "zero_spread_share": zero_spread_share(rewards, k), "position_bias": biases}
        self.history.append(entry)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("spo/zero_spread_share", entry["zero_spread_share"])
            for index, bias in enumerate(biases):
                if bias["first_slot_rate"] is not None:
                    log_metric(f"spo/judge{index}_first_slot_rate", bias["first_slot_rate"])
        return rewards


def spo_reward(judges: PairwiseJudgeFn | Sequence[PairwiseJudgeFn], group_size: int) -> SPOReward:
    """The in-group win-rate reward of one or several pairwise judges (averaged per opponent)."""
    return SPOReward(list(judges) if isinstance(judges, Sequence) else [judges], group_size)


@dataclass(frozen=True)
class SPOResult:
    log_history: list[dict]  # TRL's per-step logs (loss, reward, kl, frac_reward_zero_std, ...)
    reward_history: list[dict]  # SPOReward.history: per call, the groups' rewards and spreads

    @property
    def zero_spread_share(self) -> float:
        """Over the whole run: the share of groups with no spread in reward."""
        groups = sum(h["groups"] for h in self.reward_history)
        return sum(h["zero_spread_share"] * h["groups"] for h in self.reward_history) / groups if groups else 0.0


def train_spo(
    model: str,
    questions: Sequence[str],
    out_dir: str,
    judges: PairwiseJudgeFn | Sequence[PairwiseJudgeFn],
    k: int = 4,
    groups_per_device: int = 1,
    beta: float = 0.04,
    max_steps: int = 1,
    max_completion_length: int = 64,
    learning_rate: float = 1e-6,
    temperature: float = 1.0,
    seed: int = 0,
) -> SPOResult:
    """Online SPO on GRPOTrainer: K samples per prompt, every group whole on one process.

    ``per_device_train_batch_size = k * groups_per_device`` (and one generation batch per step)
    makes each process's slice whole groups. CPU-friendly defaults: no vLLM, fp32.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    reward = spo_reward(judges, k)
    config = GRPOConfig(
        output_dir=out_dir,
        num_generations=k,
        per_device_train_batch_size=k * groups_per_device,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        max_steps=max_steps,
        max_completion_length=max_completion_length,
        temperature=temperature,
        beta=beta,
        learning_rate=learning_rate,
        use_vllm=False,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        dataloader_pin_memory=False,
        use_cpu=cpu_process_group(),  # torchrun on CPUs: DDP over gloo, as our other trainers do
        seed=seed,
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in questions])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=dataset)
    trainer.train()
    return SPOResult(log_history=list(trainer.state.log_history), reward_history=reward.history)
