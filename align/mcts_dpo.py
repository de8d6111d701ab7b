"""MCTS-DPO (Xie et al. 2024, "Monte Carlo Tree Search Boosts Reasoning via Iterative Preference
Learning"): each iteration the current iterate searches training problems step by step
(search.mcts), sibling steps on the committed paths become step-level pairs, and the next
iterate learns them with conservative DPO against the INITIAL model.

A step pair {prompt, prefix, chosen, rejected, q_*, n_*} (the `steps` export) trains on the
step tokens only: the prompt and the shared reply prefix are context (they carry no loss), and
a step has no end of turn (the reply goes on). Its label smoothing is the search's own
uncertainty, a = min(0.5, n_rejected / (n_chosen + n_rejected)) from the visit counts, so the
DPO loss per pair is -(1 - a) log sigmoid(beta h) - a log sigmoid(-beta h) (align.losses).

Data of `socialign train --method mcts-dpo`: a scenario (built-in name or YAML) whose training
questions carry exact answers (or references, for judge-valued search); its `mcts` section sets
the search. Iteration t searches `problems` of them (a seeded window, new problems each
iteration) and writes its step pairs to OUT/iter-t/data.jsonl.
"""

from __future__ import annotations

import contextlib
import gc
import random
from pathlib import Path

from agents.seeding import derive_seed
from align.config import MCTSDPOConfig
from align.data import load_rows, locate_data
from align.dpo import PreferenceTrainer, preference_panels
from align.errors import DataError
from align.exact_eval import ACCURACY_TABLE, exact_answer_evaluator
from align.iterate import IterationContext, IterativeMethod
from align.losses import PreferenceLoss, dpo_loss
from align.tokenization import TokenizedPair, renderer_for, tokenize_pair
from formats.rows import STEPS_EXPECTED, StepRow
from scenarios import Question, ScenarioError, load_scenario
from scenarios.schema import MctsConfig
from search.pairs import steps_rows
from search.scenario import search_questions

STEPS_IN_RUN = Path("export") / "steps.jsonl"
def locate_steps(data: str | Path) -> Path:
    """`data` is a steps JSONL file or a simulation run directory (then its export/steps.jsonl)."""
    return locate_data(data, STEPS_IN_RUN, "steps")


def load_steps(path: str | Path) -> list[StepRow]:
    """Every non-blank line validated; the first bad one raises DataError naming file:line and field."""
    return load_rows(path, lambda record: StepRow, "step pairs", STEPS_EXPECTED)


def tokenize_steps(rows: list[StepRow], tokenizer, max_length: int) -> list[TokenizedPair]:
    """Each step continues prompt + prefix with no end of turn: only the step's tokens are the
    completion (the loss mask), the prefix is part of the prompt."""
    renderer = renderer_for(tokenizer)
    return [
        tokenize_pair([m.model_dump() for m in row.prompt], row.chosen, row.rejected, renderer, max_length,
                      end_of_turn=False, prefix=row.prefix, label_smoothing=row.label_smoothing)
        for row in rows
    ]


class MCTSDPOTrainer(PreferenceTrainer):
    """One MCTS-DPO iteration: conservative DPO on step pairs, a per-pair a from visit counts."""

    config: MCTSDPOConfig
    panels = preference_panels("conservative DPO loss", "reward margin (chosen - rejected step)",
                               "chosen step preferred")

    locate = staticmethod(locate_steps)
    load = staticmethod(load_steps)

    @classmethod
    def tokenize(cls, rows: list[StepRow], tokenizer, config: MCTSDPOConfig, path: Path) -> list[TokenizedPair]:
        return tokenize_steps(rows, tokenizer, config.max_length)

    def loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths,
             weights, label_smoothing, examples=None) -> PreferenceLoss:
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.config.beta,
                        weights=weights, label_smoothing=label_smoothing)

    @contextlib.contextmanager
    def _reference_model(self):
        """The configured reference model (iterations: the initial one), loaded for the reference
        pass only; without one, the model as loaded."""
        if self.config.reference_model is None:
            with super()._reference_model() as model:
                yield model
            return
        from agents.backends.hf import load_model_and_tokenizer

        reference, _ = load_model_and_tokenizer(self.config.reference_model, device="cpu", dtype="float32")
        try:
            yield reference.to(self.accelerator.device).eval()
        finally:
            del reference
            gc.collect()


# -- iterations -------------------------------------------------------------------------------


def locate_scenario(data: str | Path) -> Path:
    """`data` names a scenario (built-in or YAML) whose training questions the search runs on."""
    return load_scenario(str(data)).path


def load_problems(path: Path) -> list[Question]:
    """The scenario's training questions, which must carry what its search values them by."""
    try:
        loaded = load_scenario(path)
    except ScenarioError as error:
        raise DataError(str(error)) from None
    config = loaded.scenario.mcts or MctsConfig()
    needed = "answer" if config.value == "answer" else "reference"
    usable = [q for q in loaded.train_questions if getattr(q, needed) is not None]
    if not usable:
        raise DataError(f"{path}: no training question has an exact `{needed}` for the search to value "
                        f"(mcts.value: {config.value})")
    return usable


def search_config(path: Path, config: MCTSDPOConfig) -> MctsConfig:
    """The scenario's search settings, with the iteration's sampling options applied."""
    base = load_scenario(path).scenario.mcts or MctsConfig()
    return base.model_copy(update={"temperature": config.temperature, "top_p": config.top_p,
                                   "max_tokens": config.max_new_tokens,
                                   "step_tokens": min(base.step_tokens, config.max_new_tokens)})


def iteration_problems(problems: list[Question], count: int, seed: int, iteration: int) -> list[Question]:
    """Iteration t's problems: the t-th window of ``count`` in a seeded order (wrapping around)."""
    order = list(problems)
    random.Random(derive_seed(seed, "mcts-dpo", "order")).shuffle(order)
    start = (iteration - 1) * count
    return [order[(start + i) % len(order)] for i in range(min(count, len(order)))]


def mcts_iteration_data(context: IterationContext) -> list[dict]:
    """Search this iteration's problems with the current iterate (every tree in the same batched
    calls); the step pairs of their committed paths, with provenance."""
    config: MCTSDPOConfig = context.config
    search = search_config(context.data_file, config)
    problems = iteration_problems(context.rows, config.problems, config.seed, context.iteration)
    encoder = None
    if search.value == "judges" and any(q.reference for q in problems):
        from agents.memory import Encoder

        encoder = Encoder(load_scenario(context.data_file).scenario.memory.embedder)
    seed = derive_seed(config.seed, "mcts-dpo", "iteration", context.iteration)
    trees = search_questions(context.backend(), problems, search, seed, f"iter-{context.iteration}/", encoder)
    rows = [row for tree, q in zip(trees, problems)
            for row in steps_rows(tree, meta={"iteration": context.iteration, "question_id": q.id, "answer": q.answer})]
    if not rows:
        raise DataError(
            f"iteration {context.iteration}: the search of {len(problems)} problems found no step pairs (every sibling "
            "step was valued the same); search more problems (--problems) or with more simulations (mcts: in the scenario)"
        )
    return rows


MCTS_DPO = IterativeMethod(
    method="mcts-dpo",
    locate=locate_scenario,
    load=load_problems,
    make_data=mcts_iteration_data,
    reference="initial",
    evaluator=exact_answer_evaluator,
    table=ACCURACY_TABLE,
)
