"""95% confidence intervals that stay honest at the small n of a CPU evaluation.

Rates get Wilson's score interval (a normal approximation gives [0, 0] for 0 of 10 and
leaves [0, 1] at the edges); a paired difference of rates (both models answered the same
questions) gets Newcombe's score interval for paired proportions; means and paired mean
differences get Student's t. Each returns ``{"mean", "low", "high", "n"}`` (``mean`` of a
rate is the rate), rounded for the report; an empty sample gives ``None`` bounds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

# Normal and Student t quantiles; scipy.special, since scipy.stats costs seconds to import.
from scipy.special import ndtri, stdtrit

LEVEL = 0.95
Z = float(ndtri(0.5 + LEVEL / 2))  # 1.95996...
DIGITS = 4


def _interval(mean: float | None, low: float | None, high: float | None, n: int, **extra) -> dict:
    rounded = {key: None if value is None else round(value, DIGITS) for key, value in
               (("mean", mean), ("low", low), ("high", high))}
    return {**rounded, "n": n, **extra}


def wilson(successes: int, n: int) -> dict:
    """Wilson score interval: centre (p + z²/2n) / (1 + z²/n), half-width
    z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)."""
    if n == 0:
        return _interval(None, None, None, 0, count=0)
    low, high = _bounds(successes, n)
    return _interval(successes / n, max(0.0, low), min(1.0, high), n, count=successes)


def paired_rate_difference(first: list[bool], second: list[bool]) -> dict:
    """Newcombe (1998, method 10) for p1 - p2 on paired yes/no outcomes.

    With a = both yes, b = first only, c = second only, d = neither, n pairs: p1 = (a+b)/n,
    p2 = (a+c)/n, (l_i, u_i) their Wilson bounds and phi the continuity-corrected correlation
    (ad - bc - n/2 when ad - bc > n/2, 0 when 0 <= ad - bc <= n/2, ad - bc when negative;
    divided by sqrt((a+b)(c+d)(a+c)(b+d)), 0 when that is 0). Then
    low  = D - sqrt((p1-l1)² - 2 phi (p1-l1)(u2-p2) + (u2-p2)²),
    high = D + sqrt((p2-l2)² - 2 phi (p2-l2)(u1-p1) + (u1-p1)²).
    """
    if len(first) != len(second):
        raise ValueError("paired outcomes need the same questions on both sides")
    n = len(first)
    if n == 0:
        return _interval(None, None, None, 0)
    a = sum(1 for x, y in zip(first, second) if x and y)
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _bounds(a + b, n)
    l2, u2 = _bounds(a + c, n)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    difference = p1 - p2
    low = difference - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = difference + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return _interval(difference, max(-1.0, low), min(1.0, high), n)


def _bounds(successes: int, n: int) -> tuple[float, float]:
    """Unrounded Wilson bounds (see ``wilson``), also for the intervals built from them."""
    p = successes / n
    scale = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / scale
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / scale
    return centre - half, centre + half


def mean_t(values: list[float]) -> dict:
    """Mean ± t(n-1) · s / sqrt(n); one value has no spread to estimate, so its bounds are None."""
    n = len(values)
    if n == 0:
        return _interval(None, None, None, 0)
    mean = statistics.fmean(values)
    if n == 1:
        return _interval(mean, None, None, 1)
    half = float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * statistics.stdev(values) / math.sqrt(n)
    return _interval(mean, mean - half, mean + half, n)


def shown(stats: Mapping | None, digits: int = 2, signed: bool = False, percent: bool = False) -> str:
    """An interval as text: "mean [low, high]", the mean alone without bounds, "-" without a mean."""
    if not stats or stats.get("mean") is None:
        return "-"
    scale, unit, spec = (100, "%", f"{'+' if signed else ''}.0f") if percent else (1, "", f"{'+' if signed else ''}.{digits}f")
    text = f"{stats['mean'] * scale:{spec}}{unit}"
    if stats.get("low") is not None and stats.get("high") is not None:
        text += f" [{stats['low'] * scale:{spec}}, {stats['high'] * scale:{spec}}]"
    return text
