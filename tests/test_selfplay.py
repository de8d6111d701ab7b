"""Self-play: win rates on known votes, position-bias removal, Bradley-Terry on known tournaments,
and the self-play producer on a real tiny hf backend (every group batched into one call per step)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from agents.backends.hf import HFBackend
from agents.engine import Scheduler, immediate
from agents.prompts import pairwise_messages
from judges.preference import (
    best_and_worst,
    bradley_terry,
    debias,
    position_bias,
    preference_matrix,
    win_rates,
)
from sandbox.selfplay import Judge, Opponent, graph_ratings, selfplay_group
from sandbox.world import Agent
from scenarios import ModelRef, Sampling

# -- the pure core ----------------------------------------------------------------------------


def test_win_rates_on_known_votes():
    # Three samples. Votes: 0 beats 1; 0 ties 2; 1 vs 2 judged twice: 1 wins once, loses once.
    first, second, votes = [0, 0, 1, 2], [1, 2, 2, 1], [1.0, 0.5, 1.0, 1.0]
    # P(1 beats 2) = mean(1, 0) = 1/2 -> w0 = (1 + 1/2)/2, w1 = (0 + 1/2)/2, w2 = (1/2 + 1/2)/2
    assert win_rates(3, first, second, votes).tolist() == pytest.approx([0.75, 0.25, 0.5])
    matrix = preference_matrix(3, first, second, votes)
    assert matrix[0, 1] == 1.0 and matrix[1, 0] == 0.0 and matrix[1, 2] == 0.5
    assert np.isnan(np.diag(matrix)).all()


def test_win_rates_skip_unreadable_comparisons_and_mark_uncompared_samples():
    rates = win_rates(4, [0, 0, 1], [1, 2, 2], [1.0, math.nan, 0.25])
    # 0 met only 1 (the NaN read is skipped); 3 met nobody.
    assert rates[:3].tolist() == pytest.approx([1.0, (0.0 + 0.25) / 2, 0.75])
    assert math.isnan(rates[3])


def test_a_judge_that_always_prefers_the_first_answer_is_fully_debiased():
    p_a, first_slot = debias([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert p_a.tolist() == [0.5, 0.5, 0.5] and first_slot.tolist() == [1.0, 1.0, 1.0]
    summary = position_bias([1.0, 1.0], [1.0, 1.0])
    assert summary == {"n": 2, "first_slot_rate": 1.0, "order_dependent": 1.0}


def test_debias_removes_an_additive_slot_bias_exactly():
    true_p, bias = np.array([0.9, 0.3, 0.5]), 0.08
    p_a, first_slot = debias(true_p + bias, 1 - true_p + bias)
    assert p_a == pytest.approx(true_p) and first_slot == pytest.approx(0.5 + bias)
    # An unbiased, order-consistent judge: no order dependence.
    assert position_bias([0.9, 0.2], [0.1, 0.8])["order_dependent"] == 0.0
    assert position_bias([math.nan], [0.3]) == {"n": 0, "first_slot_rate": None, "order_dependent": None}


def round_robin(strengths, games_per_pair=1):
    pairs = list(combinations(range(len(strengths)), 2)) * games_per_pair
    first, second = [i for i, _ in pairs], [j for _, j in pairs]
    p = [strengths[i] / (strengths[i] + strengths[j]) for i, j in pairs]
    return first, second, p


def test_bradley_terry_recovers_known_strengths_from_expected_outcomes():
    strengths = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    ratings = bradley_terry(5, *round_robin(strengths), prior=0.0)
    expected = np.log(strengths) - np.log(strengths).mean()
    assert ratings == pytest.approx(expected, abs=1e-6)
    assert ratings.mean() == pytest.approx(0.0, abs=1e-12)


def test_bradley_terry_orders_a_hard_vote_tournament_and_keeps_the_unbeaten_finite():
    # Player 0 beats everyone, 1 beats everyone but 0, ...; player 4 never plays.
    first, second = zip(*combinations(range(4), 2))
    ratings = bradley_terry(5, first, second, [1.0] * len(first))
    assert np.isfinite(ratings[:4]).all() and math.isnan(ratings[4])
    assert list(np.argsort(-ratings[:4])) == [0, 1, 2, 3]
    assert ratings[:4].mean() == pytest.approx(0.0, abs=1e-12)
    # Ties between everyone: equal ratings.
    assert bradley_terry(3, [0, 0, 1], [1, 2, 2], [0.5] * 3) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_best_and_worst_gives_the_margin_and_refuses_no_spread():
    assert best_and_worst([0.25, 1.0, None, 0.0]) == (1, 3, 1.0)
    assert best_and_worst([0.5, 0.5]) is None
    assert best_and_worst([None, None]) is None


# -- the producer on a real tiny model --------------------------------------------------------


class CountingBackend(HFBackend):
    """The real hf backend, counting the batched calls it receives (and their sizes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def generate(self, requests):
        self.calls.append(("generate", len(requests)))
        return super().generate(requests)

    def next_token_logprobs(self, prompts, candidates, prefix=""):
        self.calls.append(("next_token", len(prompts)))
        return super().next_token_logprobs(prompts, candidates, prefix)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return CountingBackend(tiny_model_dir)


def word_count(answers: list[str]) -> list[float]:
    return [float(len(a.split())) for a in answers]


def words_verifier(answers: list[str]):
    """A verifier needing no model: more words wins (a producer that asks nothing)."""
    return immediate({"words": word_count(answers)})


def player(name: str, persona: str, reply_prefix: str = "") -> Agent:
    return Agent(name, "players", persona, ModelRef(), Sampling(temperature=0.7, top_p=1.0), 0, reply_prefix)


AGENTS = [player("alice", "You are kind."), player("bob", "You are blunt."), player("carol", "You are careful.")]
QUESTION = "Is it fine to read a friend's diary?"


def test_selfplay_groups_of_all_agents_share_one_call_per_step(backend):
    k, judge = 4, Judge("observer", backend)
    opponents = {"alice": [Opponent("bob", "No, it is private.")], "bob": [], "carol": []}
    producers = [
        selfplay_group(QUESTION, agent, k, backend, [judge], words_verifier,
                       opponents[agent.id], seed=7, group_id="q1", max_new_tokens=8)
        for agent in AGENTS
    ]
    backend.calls.clear()
    groups = Scheduler().run(producers)
    pairs = k * (k - 1) // 2
    # Step 1: the three groups' K samples in one generate call; step 2: every comparison of every
    # group, both orders, in one next-token call (alice's 4 samples also meet bob's answer).
    assert backend.calls == [("generate", 3), ("next_token", 2 * (3 * pairs + k))]
    for group in groups:
        assert len(group.samples) == k  # all K kept
        assert group.unreadable == 0
        # Every pair compared, P[i, j] + P[j, i] = 1: in-group win rates average exactly 1/2.
        assert np.mean(group.win_rates) == pytest.approx(0.5)
        assert np.mean(group.judges["observer"]) == pytest.approx(0.5)
        assert 0.0 <= group.position_bias["observer"]["first_slot_rate"] <= 1.0
        # The verifier's votes: more words wins, equal counts tie.
        words = word_count(group.samples)
        expected = [np.mean([(np.sign(words[i] - words[j]) + 1) / 2 for j in range(k) if j != i]) for i in range(k)]
        assert group.judges["words"] == pytest.approx(expected)
    alice = groups[0]
    assert [m[:2] for m in alice.matches] == [(i, "bob") for i in range(k)]
    assert all(m == [] for m in (groups[1].matches, groups[2].matches))
    ratings = graph_ratings(groups)
    assert ratings["carol"] is None  # no matches: no rating
    assert ratings["alice"] == pytest.approx(-ratings["bob"])  # fixed mean 0
    alice_wins = np.mean([m[2] for m in alice.matches])
    assert (ratings["alice"] > 0) == (alice_wins > 0.5)


def test_selfplay_comparisons_are_the_judges_reads_debiased(backend):
    """A group's in-group win rate of sample 0 is rebuilt from the judge's own reads in both orders."""
    judge = Judge("observer", backend)
    (group,) = Scheduler().run([selfplay_group(QUESTION, AGENTS[0], 3, backend, [judge], seed=3, max_new_tokens=6)])

    def p_first(a: str, b: str) -> float:
        (distribution,) = backend.next_token_logprobs([pairwise_messages(QUESTION, a, b, judge.criterion)], ["1", "2"])
        one, two = math.exp(distribution["1"]), math.exp(distribution["2"])
        return one / (one + two)

    s = group.samples
    p01 = debias(p_first(s[0], s[1]), p_first(s[1], s[0]))[0]
    p02 = debias(p_first(s[0], s[2]), p_first(s[2], s[0]))[0]
    assert group.win_rates[0] == pytest.approx((p01 + p02) / 2, abs=1e-5)


def test_selfplay_samples_are_seeded_per_group_and_agent(backend):
    def samples(seed, group_id, agent):
        (group,) = Scheduler().run([selfplay_group(QUESTION, agent, 2, backend, [], seed=seed, group_id=group_id,
                                                 max_new_tokens=6)])
        return group.samples

    assert samples(1, "q1", AGENTS[0]) == samples(1, "q1", AGENTS[0])
    assert samples(1, "q1", AGENTS[0]) != samples(1, "q2", AGENTS[0])
    # A reply prefix starts every sample; the model continues it.
    prefixed = samples(1, "q1", player("alice", "You are kind.", reply_prefix="No, because"))
    assert all(s.startswith("No, because") for s in prefixed)
    assert prefixed != samples(1, "q1", AGENTS[0])
