"""Confidence intervals against published and hand-computed values."""

from __future__ import annotations

import math

import pytest

from judges.intervals import mean_t, paired_rate_difference, wilson


def test_wilson_matches_the_published_score_interval():
    # Newcombe (1998), single proportion: 0/10 -> [0, 0.2775]; 5/10 -> [0.2366, 0.7634].
    assert wilson(0, 10) == {"mean": 0.0, "low": 0.0, "high": 0.2775, "n": 10, "count": 0}
    assert wilson(5, 10) == {"mean": 0.5, "low": 0.2366, "high": 0.7634, "n": 10, "count": 5}
    assert wilson(10, 10)["low"] == 0.7225 and wilson(10, 10)["high"] == 1.0
    assert wilson(0, 0) == {"mean": None, "low": None, "high": None, "n": 0, "count": 0}


def test_paired_rate_difference_matches_newcombe_on_a_published_table():
    # Cavo et al. (2012) as analysed in Fagerland, Lydersen & Laake (2017), ch. 8:
    # a=59 both, b=6 first only, c=16 second only, d=80 neither -> -0.0621 (-0.1186 to -0.0046).
    first = [True] * 65 + [False] * 96
    second = [True] * 59 + [False] * 6 + [True] * 16 + [False] * 80
    assert paired_rate_difference(first, second) == {"mean": -0.0621, "low": -0.1186, "high": -0.0046, "n": 161}


def test_paired_rate_difference_of_identical_outcomes_is_zero_and_symmetric():
    same = [True] * 3 + [False] * 7
    result = paired_rate_difference(same, same)
    assert result["mean"] == 0.0 and result["low"] < 0 < result["high"]
    assert result["low"] == pytest.approx(-result["high"])
    swapped = paired_rate_difference([False] * 10, [True] * 10)
    assert swapped["mean"] == -1.0 and swapped["low"] == -1.0 and swapped["high"] < -0.6
    with pytest.raises(ValueError):
        paired_rate_difference([True], [])


def test_mean_t_uses_students_t_not_the_normal_quantile():
    # mean 2.5, s = 1.2910, t(0.975, 3) = 3.1824: half-width 2.0543.
    result = mean_t([1.0, 2.0, 3.0, 4.0])
    assert result["mean"] == 2.5 and result["n"] == 4
    assert result["high"] - 2.5 == pytest.approx(3.18245 * 1.2909944 / math.sqrt(4), abs=1e-3)
    assert mean_t([5.0]) == {"mean": 5.0, "low": None, "high": None, "n": 1}
    assert mean_t([])["mean"] is None
