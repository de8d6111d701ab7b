"""A scenario's ``mcts`` settings as a search: its settings, its value function, its trees, and
searching questions to the end outside a run (MCTS-DPO's iterations, the bench)."""

from __future__ import annotations

from collections.abc import Sequence

from agents.backends import Backend
from agents.engine import Scheduler
from scenarios import Question
from scenarios.schema import MctsConfig
from search.mcts import Evaluator, SearchSettings, Tree, search
from search.values import JudgesEvaluator, answer_evaluator


def settings_of(config: MctsConfig, seed: int) -> SearchSettings:
    return SearchSettings(
        k=config.k, simulations=config.simulations, c_puct=config.c_puct, temperature=config.temperature,
        top_p=config.top_p, step_tokens=config.step_tokens, max_tokens=config.max_tokens,
        max_steps=config.max_steps, delimiters=tuple(config.delimiters), seed=seed,
    )


def evaluator_for(question: Question, config: MctsConfig, encoder=None) -> Evaluator:
    """The scenario's value of a node: the exact answer, or the verifiable judges (needs ``encoder``
    where the question has a reference)."""
    if config.value == "answer":
        return answer_evaluator(question.answer, config.rollouts, config.rollout_temperature)
    return JudgesEvaluator(encoder, question, config.rollouts, config.rollout_temperature)


def new_tree(tree_id: str, question: Question) -> Tree:
    return Tree.new(tree_id, [{"role": "user", "content": question.text}])


def search_questions(backend: Backend, questions: Sequence[Question], config: MctsConfig, seed: int,
                     prefix: str = "", encoder=None, scheduler: Scheduler | None = None) -> list[Tree]:
    """Search each question to the end with one model outside a run (no store): what MCTS-DPO's
    iterations and the bench call. Every tree shares the scheduler's calls."""
    settings = settings_of(config, seed)
    trees = [new_tree(f"{prefix}{q.id}", q) for q in questions]
    (scheduler or Scheduler()).run([search(tree, settings, backend, evaluator_for(q, config, encoder))
                                    for tree, q in zip(trees, questions)])
    return trees
