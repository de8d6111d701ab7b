"""SPO (Swamy et al. 2024, "A Minimaximalist Approach to RLHF"), online, on TRL's GRPOTrainer.

For each prompt the current policy samples a group of K; each sample's reward is its in-group
win rate under the judges (the mean over the other K-1 of P(win), both orders, position bias
removed: judges.preference); GRPO's group-relative advantage (r - mean_group) / std_group with
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

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.backends import Backend
from agents.backends.hf import HFBackend
from agents.engine import Scheduler
from agents.files import write_atomic
from align.config import JudgeSettings, SPOConfig
from align.data import load_prompts, locate_prompts
from align.errors import DataError
from align.processes import cpu_process_group
from align.rundir import RunDir
from align.trainer import TrainResult
from formats.rows import PromptRow
from judges.lm import PairwiseJudge
from judges.preference import DEFAULT_CRITERION, both_orders, group_pairs, vote, win_rates
from judges.verifiable import VerifiableJudges, reward_function
from scenarios.schema import QUESTION_FIELD

# (question, first answer, second answer) for each item -> P(the judge prefers the first); one batched call.
PairwiseJudgeFn = Callable[[list[tuple[str, str, str]]], list[float | None]]


class GroupSplit(ValueError):
    """The reward function was given rows that are not whole groups of K consecutive samples."""


def backend_judge(backend: Backend, criterion: str = DEFAULT_CRITERION) -> PairwiseJudgeFn:
    """The LM pairwise judge (judges.lm.PairwiseJudge) on any backend, items read in the order given,
    all in one call."""
    judge = PairwiseJudge(backend, criterion)
    return lambda items: Scheduler().run([judge.reads(items)])[0]


def without_spread(values: Sequence[float | None], group_size: int) -> np.ndarray:
    """Per group of K consecutive values: are they all equal? (GRPO's advantage is 0 there: no signal.)"""
    grouped = np.asarray([math.nan if v is None else v for v in values], dtype=float).reshape(-1, group_size)
    unread = np.isnan(grouped)  # unscorable samples are left out; an all-unscorable group has no spread
    spread = np.where(unread, -np.inf, grouped).max(axis=1) - np.where(unread, np.inf, grouped).min(axis=1)
    return ~(spread > 1e-9)


def zero_spread_share(rewards: Sequence[float | None], group_size: int) -> float:
    """The share of groups whose K rewards are all equal."""
    flags = without_spread(rewards, group_size)
    return float(np.mean(flags)) if flags.size else 0.0


def _text(message_or_text) -> str:
    """A completion or prompt as text: the last message's content if conversational."""
    return message_or_text[-1]["content"] if isinstance(message_or_text, list) else message_or_text


class SPOReward:
    """In-group win rates in GRPOTrainer's reward signature ``(prompts, completions, **kwargs)``.

    Pairwise judges compare every pair in both orders; pointwise ``scorers`` (a score per
    completion in TRL's reward signature, e.g. judges.verifiable.reward_function) vote within
    the group: the higher score wins, equal scores tie, no score abstains. ``history`` keeps, per
    call, the groups' rewards, the share with no spread, the same share per scorer (a judge whose
    scores never differ within a group, such as the decline judge when no sample declines, adds
    no signal) and each pairwise judge's position bias (also sent to TRL's ``log_metric``, so
    they land in the run's logs).
    """

    def __init__(self, judges: Sequence[PairwiseJudgeFn], group_size: int, scorers: Sequence[Callable] = ()) -> None:
        self.judges = list(judges)
        self.scorers = list(scorers)
        self.group_size = group_size
        self.history: list[dict] = []
        self.__name__ = "spo_win_rate"  # TRL names the reward's metrics after it

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        k = self.group_size
        questions, answers = [_text(p) for p in prompts], [_text(c).strip() for c in completions]
        if len(prompts) % k or any(len({str(p) for p in prompts[g : g + k]}) != 1 for g in range(0, len(prompts), k)):
            raise GroupSplit(f"the reward needs whole groups of {k} consecutive completions of one prompt, "
                             f"got {len(prompts)} rows that are not")
        first, second = group_pairs(k)
        starts = np.arange(0, len(prompts), k)
        a, b = (starts[:, None] + first).ravel(), (starts[:, None] + second).ravel()
        forward = [(questions[i], answers[i], answers[j]) for i, j in zip(a, b)]
        backward = [(q, y, x) for q, x, y in forward]
        outcomes, biases, scorer_spread = [], [], {}
        for judge in self.judges:
            reads = np.array([math.nan if p is None else p for p in judge(forward + backward)], dtype=float)
            p, bias = both_orders(reads[: len(forward)], reads[len(forward) :])
            outcomes.append(p.reshape(len(starts), -1))
            biases.append(bias)
        for scorer in self.scorers:
            scores = scorer(prompts=prompts, completions=completions, **kwargs)
            outcomes.append(vote(scores, a, b).reshape(len(starts), -1))
            name = getattr(scorer, "__name__", f"scorer{len(scorer_spread)}")
            scorer_spread[name] = without_spread(scores, k).tolist()
        rewards: list[float | None] = []
        for g in range(len(starts)):
            p = np.concatenate([o[g] for o in outcomes])
            rates = win_rates(k, np.tile(first, len(outcomes)), np.tile(second, len(outcomes)), p)
            rewards += [None if math.isnan(r) else float(r) for r in rates]
        entry = {"groups": len(starts), "questions": [questions[s] for s in starts], "rewards": rewards,
                 "zero_spread_share": zero_spread_share(rewards, k),
                 "scorer_zero_spread": {name: float(np.mean(flags)) for name, flags in scorer_spread.items()},
                 "scorer_without_spread": scorer_spread, "position_bias": biases}
        self.history.append(entry)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("spo/zero_spread_share", entry["zero_spread_share"])
            for name, share in entry["scorer_zero_spread"].items():
                log_metric(f"spo/{name}_zero_spread_share", share)
            for index, bias in enumerate(biases):
                if bias["first_slot_rate"] is not None:
                    log_metric(f"spo/judge{index}_first_slot_rate", bias["first_slot_rate"])
        return rewards


def spo_reward(judges: PairwiseJudgeFn | Sequence[PairwiseJudgeFn], group_size: int,
               scorers: Sequence[Callable] = ()) -> SPOReward:
    """The in-group win-rate reward of pairwise judges and pointwise scorers (averaged per opponent)."""
    return SPOReward(list(judges) if isinstance(judges, Sequence) else [judges], group_size, scorers)


def configured_judges(config: JudgeSettings) -> tuple[list[PairwiseJudgeFn], list[Callable]]:
    """The judges a config names: the LM pairwise judge (if on) and one TRL-signature scorer per
    verifiable judge (each its own VerifiableJudges, so only the similarity one embeds)."""
    pairwise = [backend_judge(HFBackend(config.judge_model))] if config.lm_judge else []
    return pairwise, [reward_function(VerifiableJudges({name: 1.0}), name) for name in config.verifier_names()]


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
    model,
    prompts: Sequence[str | dict],
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
    scorers: Sequence[Callable] = (),
    tokenizer=None,
    precision: str = "no",  # TRL's mixed precision: "bf16", "fp16" or fp32 ("no")
    **grpo_options,
) -> SPOResult:
    """Online SPO on GRPOTrainer: K samples per prompt, every group whole on one process.

    ``model`` is a path/hub id or a loaded model (then pass its ``tokenizer``); ``prompts`` are
    questions or dataset rows ({prompt, expected, reference}: the columns the scorers read).
    ``per_device_train_batch_size = k * groups_per_device`` (and one generation batch per step)
    makes each process's slice whole groups. CPU-friendly defaults: no vLLM, fp32.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    reward = spo_reward(judges, k, scorers)
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
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        dataloader_pin_memory=False,
        use_cpu=cpu_process_group(),  # torchrun on CPUs: DDP over gloo, as our other trainers do
        seed=seed,
        **grpo_options,
    )
    rows = [{"prompt": [{"role": "user", "content": p}]} if isinstance(p, str) else p for p in prompts]
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    trainer.train()
    if out_dir:
        trainer.save_model(out_dir)
    return SPOResult(log_history=list(trainer.state.log_history), reward_history=reward.history)


class SPOTrainer:
    """``socialign train --method spo``: the registered method's hooks (align.run) around ``train_spo``.

    Not the skeleton's loop: sampling, KL and the group-relative gradient are TRL's GRPOTrainer.
    Judges: the verifiable ones (judges.verifiable, one vote each) and/or the LM pairwise judge.
    Saves the model in the output directory, TRL's step logs in metrics.jsonl, and the share of
    groups with no spread in reward in spo_summary.json.
    """

    locate = staticmethod(locate_prompts)
    load = staticmethod(load_prompts)

    @classmethod
    def tokenize(cls, rows: list[PromptRow], tokenizer, config: SPOConfig, path: Path) -> list[dict]:
        for name in config.verifier_names():
            needed = QUESTION_FIELD[name]
            lacking = [number for number, row in enumerate(rows, start=1) if getattr(row, needed) is None]
            if lacking:
                raise DataError(f"{path}: row {lacking[0]}: the '{name}' judge needs field '{needed}' "
                                f"({len(lacking)} rows lack it); drop it with --verifiers")
        return [row.column() for row in rows]

    def __init__(self, model, tokenizer, examples: list[dict], config: SPOConfig, run_dir: RunDir, callbacks=()) -> None:
        self.model, self.tokenizer, self.examples, self.config, self.run_dir = model, tokenizer, examples, config, run_dir
        self.callbacks = list(callbacks)

    def train(self, resume: bool = False) -> TrainResult:
        if resume:
            raise DataError(f"{self.run_dir.path}: --resume is not supported by --method spo yet; start a new run")
        config = self.config
        pairwise, scorers = configured_judges(config)
        result = train_spo(
            self.model, self.examples, str(self.run_dir.path), pairwise, k=config.k, groups_per_device=config.batch_size,
            beta=config.beta, max_steps=config.max_steps or -1, max_completion_length=config.max_completion_length,
            learning_rate=config.lr, temperature=config.temperature, seed=config.seed, scorers=scorers,
            tokenizer=self.tokenizer, num_train_epochs=config.epochs,
            warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the steps
            lr_scheduler_type=config.lr_scheduler, weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm or 0.0, precision=config.mixed_precision,
        )
        history = [row for row in result.log_history if "loss" in row]
        if history:
            history[-1] = {**history[-1], "zero_spread_share": result.zero_spread_share}
        for row in history:
            self.run_dir.append_metrics(row)
            for callback in self.callbacks:
                callback(row)
        summary = {"zero_spread_share": result.zero_spread_share,
                   "groups": sum(h["groups"] for h in result.reward_history),
                   "steps": [{"zero_spread_share": h["zero_spread_share"], "rewards": h["rewards"],
                              "scorer_zero_spread": h["scorer_zero_spread"], "position_bias": h["position_bias"]}
                             for h in result.reward_history]}
        write_atomic(self.run_dir.path / "spo_summary.json", json.dumps(summary, indent=2) + "\n")
        step = history[-1].get("step", len(history)) if history else 0
        return TrainResult(self.run_dir.path, self.run_dir.path, step, history)
