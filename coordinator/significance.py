"""Tests for differences between arms: two-proportion z and Welch's t, in pure Python.

Kept dependency-free (no scipy): the normal tail via erfc, Student's t tail via
the regularised incomplete beta function (continued fraction, as in Numerical
Recipes, section 6.4).
"""

from __future__ import annotations

import math


def two_proportion_z(successes_a: float, n_a: float, successes_b: float, n_b: float) -> tuple[float, float]:
    """(z, two-sided p) for H0: the two rates are equal. Returns (0, 1) when undefined."""
    if n_a <= 0 or n_b <= 0:
        return 0.0, 1.0
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 0.0, 1.0
    z = (successes_b / n_b - successes_a / n_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def welch_t(mean_a: float, var_a: float, n_a: float, mean_b: float, var_b: float, n_b: float) -> tuple[float, float]:
    """(t, two-sided p) for H0: equal means, unequal variances. (0, 1) when undefined."""
    if n_a < 2 or n_b < 2:
        return 0.0, 1.0
    sa, sb = var_a / n_a, var_b / n_b
    se2 = sa + sb
    if se2 <= 0:
        return 0.0, 1.0
    t = (mean_b - mean_a) / math.sqrt(se2)
    df = se2 * se2 / (sa * sa / (n_a - 1) + sb * sb / (n_b - 1)) if sa or sb else n_a + n_b - 2
    return t, _student_two_sided_p(t, df)


def _student_two_sided_p(t: float, df: float) -> float:
    x = df / (df + t * t)
    return min(1.0, _regularized_incomplete_beta(df / 2, 0.5, x))


def _regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float, iterations: int = 300, eps: float = 1e-14) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h
