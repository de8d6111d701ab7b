"""Preference maths, pure (numpy; the formula in each docstring): what a judge's reads of A vs B
mean, shared by the simulation's self-play, SPO's reward and evaluation.

    debias          P(A beats B) from a judge read in both orders, and its first-slot rate
    position_bias   how much a judge favours slot 1, over many comparisons
    group_pairs, both_orders, vote
                    the in-group comparison: every pair of a group's samples, an LM judge's
                    reads in both orders, a pointwise judge's vote
    win_rates       per sample: the mean over its opponents of P(win); ties count 1/2
    bradley_terry   ratings from (soft) match outcomes, e.g. agents over the graph
    best_and_worst  the chosen/rejected pair of a group and its margin
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from judges.intervals import mean_t

DEFAULT_CRITERION = "more helpful, honest and harmless"


def debias(p_first_forward, p_first_backward) -> tuple[np.ndarray, np.ndarray]:
    """P(A beats B) with the judge's position bias removed, and the judge's first-slot rate.

        forward  f = P(judge picks slot 1 | A in slot 1, B in slot 2)
        backward b = P(judge picks slot 1 | B in slot 1, A in slot 2)
        P(A beats B)    = (f + (1 - b)) / 2
        first-slot rate = (f + b) / 2            (1/2: no position bias, 1: always slot 1)

    If the judge adds a bias d to slot 1 (f = p + d, b = 1 - p + d) this returns exactly p and
    1/2 + d. A judge that always picks slot 1 gives P(A beats B) = 1/2: it carries no signal.
    Unreadable reads (NaN) give NaN. Scalars or arrays.
    """
    f = np.asarray(p_first_forward, dtype=float)
    b = np.asarray(p_first_backward, dtype=float)
    return (f + 1.0 - b) / 2, (f + b) / 2


@dataclass(frozen=True)
class Preference:
    """A judge's reading of A vs B in both orders: P(slot 1 is better) with A first, then B first."""

    p_first_forward: float
    p_first_backward: float

    @property
    def p_a_better(self) -> float:
        """Averaged over both orders, which cancels the judge's preference for a slot."""
        return float(debias(self.p_first_forward, self.p_first_backward)[0])

    @property
    def first_slot(self) -> float:
        """How much the judge favours slot 1 whatever is in it (0.5: no position bias)."""
        return float(debias(self.p_first_forward, self.p_first_backward)[1])


def first_preferred(distribution: dict[str, float]) -> float | None:
    """P(the judge answers "1") renormalised over {"1", "2"}; None if neither has mass."""
    one, two = (math.exp(distribution.get(c, -math.inf)) for c in ("1", "2"))
    return one / (one + two) if one + two > 0 else None


def position_bias(p_first_forward, p_first_backward) -> dict:
    """A judge's position bias over its comparisons (unreadable ones left out).

    first_slot_rate: mean of (f + b)/2 (0.5 = unbiased); order_dependent: the share of
    comparisons whose winner flips with the order (f and b on the same side of 1/2).
    """
    f = np.asarray(p_first_forward, dtype=float)
    b = np.asarray(p_first_backward, dtype=float)
    read = ~(np.isnan(f) | np.isnan(b))
    f, b = f[read], b[read]
    if not read.any():
        return {"n": 0, "first_slot_rate": None, "order_dependent": None}
    flips = (f > 0.5) == (b > 0.5)
    return {"n": int(read.sum()), "first_slot_rate": float(debias(f, b)[1].mean()),
            "order_dependent": float(flips.mean())}


def group_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair i < j of a group's K samples, as (first, second) index arrays."""
    return np.triu_indices(k, 1)


def both_orders(p_first_forward, p_first_backward) -> tuple[np.ndarray, dict]:
    """An LM judge's comparisons read in both orders: P(first beats second) with the position bias
    removed (``debias``), and that bias over all of them (``position_bias``)."""
    return debias(p_first_forward, p_first_backward)[0], position_bias(p_first_forward, p_first_backward)


def vote(scores, first, second) -> np.ndarray:
    """A pointwise judge's comparisons: the higher score wins (1), equal scores tie (1/2), a missing
    score (None) abstains (NaN)."""
    values = np.array([math.nan if s is None else s for s in scores], dtype=float)
    return (np.sign(values[first] - values[second]) + 1) / 2


def preference_matrix(k: int, first, second, p_first_wins) -> np.ndarray:
    """P[i, j] = mean over the comparisons of i and j of P(i beats j); P[j, i] = 1 - P[i, j].

    Several comparisons of one pair (several judges) are averaged; NaN ones are skipped;
    never-compared pairs and the diagonal are NaN.
    """
    first, second = np.asarray(first, dtype=int), np.asarray(second, dtype=int)
    p = np.asarray(p_first_wins, dtype=float)
    read = ~np.isnan(p)
    first, second, p = first[read], second[read], p[read]
    wins, games = np.zeros((k, k)), np.zeros((k, k))
    np.add.at(wins, (first, second), p)
    np.add.at(wins, (second, first), 1.0 - p)
    np.add.at(games, (first, second), 1.0)
    np.add.at(games, (second, first), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = wins / games
    np.fill_diagonal(matrix, np.nan)
    return matrix


def win_rates(k: int, first, second, p_first_wins) -> np.ndarray:
    """Per sample i: w_i = mean over opponents j of P(i beats j) (from ``preference_matrix``).

    Comparisons are (first[c], second[c], P(first beats second)): a vote is 1 or 0, a tie 1/2,
    a debiased LM judgment anything between. A sample with no readable comparison gets NaN.
    """
    return mean_over_opponents(preference_matrix(k, first, second, p_first_wins))


def mean_over_opponents(matrix: np.ndarray) -> np.ndarray:
    """Row means of a preference matrix over its compared (non-NaN) entries; NaN for an empty row."""
    compared = ~np.isnan(matrix)
    counts = compared.sum(axis=1)
    totals = np.where(compared, matrix, 0.0).sum(axis=1)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def bradley_terry(
    num_players: int, first, second, p_first_wins, prior: float = 1.0, max_iterations: int = 1000,
    tolerance: float = 1e-9,
) -> np.ndarray:
    """Bradley-Terry ratings r (log-strengths, mean 0) from soft match outcomes.

    Model: P(i beats j) = s_i / (s_i + s_j), s = exp(r). Fit by Hunter's (2004) MM update

        s_i <- (W_i + prior/2) / (sum over i's matches c of 1/(s_i + s_opp(c)) + prior/(s_i + 1))

    where W_i is i's total score (a win 1, a tie 1/2, a soft outcome p). ``prior`` adds that many
    virtual games, drawn half-and-half, against a player of strength 1: it keeps an unbeaten
    player finite (MAP instead of an MLE that would diverge); prior=0 is the plain MLE. Cost is
    linear in the matches. Players without a readable match get NaN and stay out of the mean.
    On the Elo scale a rating is r * 400 / ln(10).
    """
    first, second = np.asarray(first, dtype=int), np.asarray(second, dtype=int)
    p = np.asarray(p_first_wins, dtype=float)
    keep = ~np.isnan(p) & (first != second)
    first, second, p = first[keep], second[keep], p[keep]
    games = np.bincount(first, minlength=num_players) + np.bincount(second, minlength=num_players)
    played = games > 0
    score = np.bincount(first, p, num_players) + np.bincount(second, 1.0 - p, num_players)
    strength = np.ones(num_players)
    for _ in range(max_iterations):
        inverse = 1.0 / (strength[first] + strength[second])
        denominator = np.bincount(first, inverse, num_players) + np.bincount(second, inverse, num_players)
        denominator = denominator + prior / (strength + 1.0)
        updated = np.where(played, (score + prior / 2) / np.where(played, denominator, 1.0), 1.0)
        updated = np.maximum(updated, 1e-300)
        change = np.abs(np.log(updated) - np.log(strength)).max(initial=0.0)
        strength = updated
        if change < tolerance:
            break
    ratings = np.log(strength)
    ratings = np.where(played, ratings - (ratings[played].mean() if played.any() else 0.0), np.nan)
    return ratings


def best_and_worst(rates: Sequence[float]) -> tuple[int, int, float] | None:
    """(best sample, worst sample, margin = their win-rate difference); None without a spread."""
    values = np.asarray(rates, dtype=float)
    if np.isnan(values).all():
        return None
    best, worst = int(np.nanargmax(values)), int(np.nanargmin(values))
    margin = float(values[best] - values[worst])
    return (best, worst, margin) if margin > 0 else None


def outcome(preference: Preference, tie_margin: float) -> str:
    """A's win, tie or loss: a tie when |P(A better) - 0.5| is under the margin."""
    p = preference.p_a_better
    return "tie" if abs(p - 0.5) < tie_margin else ("win" if p > 0.5 else "loss")


def pairwise_summary(preferences: Sequence[Preference | None], tie_margin: float) -> dict:
    """A's win/tie/loss rates, P(A better) with a t interval, and the judge's first-slot rate."""
    read = [p for p in preferences if p is not None]
    counts = {"win": 0, "tie": 0, "loss": 0}
    for preference in read:
        counts[outcome(preference, tie_margin)] += 1
    total = len(read)
    return {
        "n": total,
        **{f"{k}_rate": round(v / total, 4) if total else None for k, v in counts.items()},
        "p_a_better": mean_t([p.p_a_better for p in read]),
        "judge_first_slot_rate": round(statistics.fmean(p.first_slot for p in read), 4) if read else None,
    }
