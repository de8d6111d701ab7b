"""The self-play phase of a round: every agent's K samples, judged pairwise, as one step.

Runs after the round's observers (scenario field ``selfplay``). Each agent answers its
round's question K times (one ``n=K`` request); LM judges (the observers' model with each
observer persona, and/or the agent's graph neighbours with their own models and personas)
compare every pair of samples and every sample against the round's final answers of the
nearest other agents that answered the same question; verifiable judges (decline,
reference similarity: judges.verifiable) vote too. Every group of every agent of every world
is one producer, so the scheduler makes one generate call and one judge call per model, and
one encoder call for every embedding the verifiers need.

Records (registered kinds, so resume needs nothing here): one ``selfplay`` record per agent
and one ``selfplay_ratings`` record per round with the agents' Bradley-Terry ratings.
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import networkx as nx

from agents.engine import Producer, gather
from agents.prompts import OBSERVER_PERSONA
from judges.lm import verify
from judges.verifiable import JUDGES
from sandbox import report_figures as figures
from sandbox.context import RunContext
from sandbox.protocol import Protocol
from sandbox.records import Phase, Record
from sandbox.report_html import EXAMPLES, Report, absent, esc, optional_rows, table, text_block
from sandbox.selfplay import (
    Judge,
    Opponent,
    RatingsRecord,
    graph_ratings,
    prompt_rows,
    record_of,
    selfplay_group,
)
from sandbox.world import Agent
from scenarios import Question

SELFPLAY = Phase("selfplay")


def _nearest_answering(ctx: RunContext, agent: Agent, answered: Sequence[Agent], limit: int) -> list[Agent]:
    """Up to ``limit`` other agents that answered the same question, nearest on the graph first."""
    distance = nx.single_source_shortest_path_length(ctx.world.graph, agent.node)
    others = [a for a in answered if a.id != agent.id]
    return sorted(others, key=lambda a: (distance.get(a.node, float("inf")), a.id))[:limit]


class _Verifiers:
    """One group's verifiable judges (judges.verifiable) as a self-play ``verify`` producer: its
    embeddings are one Embed op, so the scheduler embeds every group of the phase in one call.
    Keeps the judgements: each sample's veto goes into the record."""

    def __init__(self, question: Question, encoder) -> None:
        self.question, self.encoder, self.judgements = question, encoder, []

    def __call__(self, answers: list[str]) -> Producer[dict[str, list[float | None]]]:
        self.judgements = yield from verify([self.question] * len(answers), answers, self.encoder)
        return {name: [j.scores.get(name) for j in self.judgements] for name in JUDGES}


def selfplay_step(ctx: RunContext, round_index: int, assignments: Sequence, finals: Mapping[str, str]) -> Producer[list[Record]]:
    """The phase's records; ``assignments`` are the round's (agent, question_id, question),
    ``finals`` each agent's final answer this round (what the samples meet as opponents)."""
    config = ctx.scenario.selfplay
    observers = ctx.scenario.observers
    questions = {q.id: q for q in ctx.loaded.train_questions}
    by_question: dict[str, list[Agent]] = {}
    for a in assignments:
        by_question.setdefault(a.question_id, []).append(a.agent)
    producers, panels = [], []
    for a in assignments:
        agent = a.agent
        lm_judges = []
        if "observers" in config.judges:
            personas = observers.personas or [OBSERVER_PERSONA]
            lm_judges += [Judge("observers", ctx.backend(observers.model), config.criterion, personas[i % len(personas)])
                          for i in range(observers.count)]
        if "neighbours" in config.judges:
            rng = random.Random(ctx.seed_for(round_index, "selfplay-judges", agent.id))
            lm_judges += [Judge("neighbours", ctx.backend(p.model), config.criterion, p.persona)
                          for p in ctx.world.peers(agent, config.neighbour_judges, rng)]
        opponents = [Opponent(o.id, finals[o.id]) for o in
                     _nearest_answering(ctx, agent, by_question[a.question_id], config.opponents) if o.id in finals]
        panel = _Verifiers(questions[a.question_id], ctx.memory.encoder) if config.verifiers else None
        panels.append(panel)
        producers.append(selfplay_group(
            a.question, agent, config.k, ctx.backend(agent.model), lm_judges, panel, opponents,
            seed=ctx.seed, group_id=f"{round_index}/{a.question_id}",
            max_new_tokens=config.max_new_tokens or agent.sampling.max_new_tokens,
        ))
    groups = yield from gather(producers)
    phase = str(SELFPLAY)
    records: list[Record] = [
        record_of(group, ctx.record_id(round_index, a.agent.id, a.question_id, "selfplay"), round_index, phase,
                  a.agent.group, a.question_id,
                  # the verifiers judged the samples, then the opponents' answers: the first K are the samples
                  appropriate=[j.appropriate for j in panel.judgements][: len(group.samples)] if panel else None,
                  expected=questions[a.question_id].expected, reference=questions[a.question_id].reference)
        for a, group, panel in zip(assignments, groups, panels)
    ]
    ratings = graph_ratings(groups)
    records.append(RatingsRecord(id=ctx.record_id(round_index, "selfplay-ratings"), round=round_index, phase=phase,
                                 ratings=ratings, matches=sum(len(g.matches) for g in groups)))
    return records


# -- its report section and the protocol ---------------------------------------------------

SELFPLAY_FILE = "selfplay.jsonl"


def selfplay_section(report: Report, root: Path) -> None:
    rows = optional_rows(root, SELFPLAY_FILE)
    if rows is None:
        report.add("selfplay", "Self-play win rates", absent())
        return
    groups = [r for r in rows if isinstance(r.get("win_rates"), list) and isinstance(r.get("samples"), list)]
    if not groups:
        report.add("selfplay", "Self-play win rates", absent(f"{SELFPLAY_FILE} has no rows with win rates"))
        return
    key = "group" if len({r.get("agent") for r in groups}) > 30 and all("group" in r for r in groups) else "agent"
    by_player = defaultdict(list)
    for row in groups:
        by_player[str(row.get(key))].extend(w for w in row["win_rates"] if isinstance(w, int | float))
    body = report.figure("selfplay", figures.win_rate_figure(dict(sorted(by_player.items()))),
                         "self-play win rates per agent")
    samples = sum(len(r["samples"]) for r in groups)
    body += f"<p>{len(groups)} self-play groups, {samples} samples.</p>"
    biases = defaultdict(list)
    for row in groups:
        for judge, bias in (row.get("position_bias") or {}).items():
            if isinstance(bias, dict) and isinstance(bias.get("first_slot_rate"), int | float):
                biases[judge].append(bias["first_slot_rate"])
    if biases:
        body += "<h3>Judges' position bias</h3>" + table(
            ["judge", "mean first-slot rate (0.5 = none)", "groups"],
            [(j, statistics.fmean(v), len(v)) for j, v in sorted(biases.items())])
    body += "<h3>Widest spreads: best and worst sample</h3>"
    for row in sorted(groups, key=_spread, reverse=True)[:EXAMPLES]:
        rated = [(w, s) for w, s in zip(row["win_rates"], row["samples"]) if isinstance(w, int | float)]
        if not rated:
            continue
        (best_rate, best), (worst_rate, worst) = max(rated, key=lambda x: x[0]), min(rated, key=lambda x: x[0])
        body += (f'<div class="pair"><div><b>{esc(row.get("question", ""))}</b> '
                 f'<span class="muted">{esc(row.get("agent", ""))}</span></div><div class="sides">'
                 f'<div class="chosen"><b>best</b> win rate {best_rate:.2f}{text_block(best)}</div>'
                 f'<div class="rejected"><b>worst</b> win rate {worst_rate:.2f}{text_block(worst)}</div>'
                 "</div></div>")
    report.add("selfplay", "Self-play win rates", body)


def _spread(row: dict) -> float:
    rates = [w for w in row["win_rates"] if isinstance(w, int | float)]
    return max(rates) - min(rates) if rates else -1.0


SELF_PLAY = Protocol(
    "selfplay", claims=None, rounds=None,  # a phase of Back-Scatter's rounds, counted in theirs
    phases_per_round=lambda scenario: 0, record_kinds=("selfplay", "selfplay_ratings"),
    export=lambda store: {"prompts": prompt_rows(store.records("selfplay"))}, report=selfplay_section,
)
