"""SPPO (Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment") on the
iteration driver (align.iterate): `socialign train --method sppo --iterations T`.

Iteration t: (a) iterate t-1 samples K replies per training prompt, one batched generate call
with n=K, all K kept; (b) the sandbox's judges estimate each reply's win probability
P(y beats pi_{t-1} | x) as its in-group win rate (align.spo.SPOReward: the verifiable judges
vote, an LM judge reads both orders with its position bias removed); (c) iterate t is trained
with the SPPO square loss (align.losses.sppo_loss) against iterate t-1 as the frozen reference.

Data: the method reads prompts ({prompt, expected?, reference?}: a run's export/prompts.jsonl).
A verifiable judge abstains on a row that lacks its field (similarity needs a reference); a
row no judge can score is refused before any model loads. Iteration t's data file holds
preference pairs whose ``score_chosen``/``score_rejected`` are the two replies' win
probabilities, the format the self-play export's pairs already have. A group's K replies are
paired by rank (best with worst, second with second-worst, ...), so every reply is regressed
onto its own probability once (an odd K leaves out the middle reply, whose target is nearest
0); replies with no readable comparison are dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from agents.backends import GenerationRequest
from agents.seeding import derive_seed
from align.config import SPPOConfig
from align.data import load_pairs, load_prompts, locate_pairs, locate_prompts
from align.dpo import PreferenceTrainer
from align.errors import DataError
from align.iterate import IterationContext, IterativeMethod
from align.losses import PreferenceLoss, sppo_loss
from align.spo import configured_judges, spo_reward
from align.tokenization import TokenizedPair, tokenize_pairs
from align.trainer import StepOutput
from formats.rows import PreferencePair, PromptRow
from scenarios.schema import QUESTION_FIELD


@dataclass(frozen=True)
class ScoredPair(TokenizedPair):
    """A tokenized pair and its two replies' win probabilities (the loss's targets)."""

    win_probs: tuple[float, float] = (0.5, 0.5)


class SPPOTrainer(PreferenceTrainer):
    """One SPPO iteration on pairs with win probabilities, the model as loaded the reference."""

    config: SPPOConfig
    examples: list[ScoredPair]
    panels = (
        ("loss", "SPPO loss"),
        ("rewards/margin", "log-ratio margin / eta (chosen - rejected)"),
        ("tied", "pairs with equal win probabilities"),
    )

    locate = staticmethod(locate_pairs)

    @staticmethod
    def load(path: str | Path) -> list[PreferencePair]:
        """Pairs whose scores are win probabilities in [0, 1] (what the loss regresses onto)."""
        rows = load_pairs(path)
        for number, row in enumerate(rows, start=1):
            for name in ("score_chosen", "score_rejected"):
                value = getattr(row, name)
                if value is None or not 0 <= value <= 1:
                    raise DataError(f"{path}: row {number}: field '{name}' must be a win probability in [0, 1], "
                                    f"found {value}")
        return rows

    @classmethod
    def tokenize(cls, rows: list[PreferencePair], tokenizer, config: SPPOConfig, path: Path) -> list[ScoredPair]:
        return [ScoredPair(**asdict(pair), win_probs=(row.score_chosen, row.score_rejected))
                for pair, row in zip(tokenize_pairs(rows, tokenizer, config.max_length), rows)]

    def prepare(self) -> None:
        self.reference = self.reference_logps()  # under the model as loaded: the previous iterate
        self.smoothing = torch.zeros(len(self.examples))  # SPPO has no label smoothing
        self.win_probs = torch.tensor([pair.win_probs for pair in self.examples])

    def compute(self, batch: dict[str, torch.Tensor], indices: list[int]) -> StepOutput:
        out = super().compute(batch, indices)
        win = self.win_probs[indices]
        out.metrics["tied"] = ((win[:, 0] == win[:, 1]).sum(), torch.tensor(len(indices)))
        return out

    def loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths,
             weights, label_smoothing, examples) -> PreferenceLoss:
        win = self.win_probs[examples].to(policy_chosen.device)
        return sppo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, win[:, 0], win[:, 1],
                         self.config.eta, weights=weights)


# -- the iteration's data ------------------------------------------------------------------------


def check_judges(rows: list[PromptRow], config: SPPOConfig, path: Path) -> None:
    """Refuse a row that no judge could score (its K win rates would be unknown)."""
    if config.lm_judge:
        return
    fields = [QUESTION_FIELD[name] for name in config.verifier_names()]
    for number, row in enumerate(rows, start=1):
        if all(getattr(row, needed) is None for needed in fields):
            raise DataError(f"{path}: row {number}: no judge can score its replies: it has no "
                            f"{' or '.join(repr(f) for f in fields)} field (add one, or use --lm-judge)")


def rank_pairs(rates: list[float | None]) -> list[tuple[int, int]]:
    """(chosen, rejected) indices: best with worst, second with second-worst, ...; unrated left out."""
    order = sorted((i for i, r in enumerate(rates) if r is not None), key=lambda i: (-rates[i], i))
    return [(order[n], order[-1 - n]) for n in range(len(order) // 2)]


def sppo_iteration_data(context: IterationContext) -> list[dict]:
    """Iteration t's pairs: K seeded samples per prompt from the current iterate (one generate
    call), their in-group win rates under the judges (one batched judging pass), paired by rank."""
    config: SPPOConfig = context.config
    rows: list[PromptRow] = context.rows
    k = config.k
    seed = derive_seed(config.seed, "sppo", "iteration", context.iteration)
    prompts = [[m.model_dump() for m in row.prompt] for row in rows]
    requests = [
        GenerationRequest(prompt, n=k, temperature=config.temperature, top_p=config.top_p,
                          max_new_tokens=config.max_new_tokens, seed=derive_seed(seed, index))
        for index, prompt in enumerate(prompts)
    ]
    completions = context.generate(requests)
    samples = [[c.text.strip() for c in group] for group in completions]
    pairwise, scorers = configured_judges(config)
    reward = spo_reward(pairwise, k, scorers)

    def repeated(values: list) -> list:
        return [value for value in values for _ in range(k)]

    rates = reward(repeated(prompts), [s for group in samples for s in group],
                   expected=repeated([row.expected for row in rows]), reference=repeated([row.reference for row in rows]))
    (judged,) = reward.history
    out = []
    for g, (row, prompt, replies) in enumerate(zip(rows, prompts, samples)):
        group = rates[g * k : (g + 1) * k]
        for chosen, rejected in rank_pairs(group):
            out.append({
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": replies[chosen]}],
                "rejected": [{"role": "assistant", "content": replies[rejected]}],
                "score_chosen": group[chosen],
                "score_rejected": group[rejected],
                "source": "sppo",
                "meta": {**row.meta, "iteration": context.iteration, "group": g, "samples": [chosen, rejected],
                         "win_rates": group, "position_bias": judged["position_bias"],
                         "judges_without_spread": [name for name, flags in judged["scorer_without_spread"].items()
                                                   if flags[g]]},
            })
    if not out:
        raise DataError(f"iteration {context.iteration}: no reply could be judged, so there is nothing to train on")
    return out


SPPO = IterativeMethod(method="sppo", locate=locate_prompts, load=load_prompts, make_data=sppo_iteration_data,
                       check=check_judges)
