"""The statistics behind a verdict: Welch's t-test, its interval, Holm's correction, and the rule.

A claim "A is better than B" (higher is better, e.g. validation accuracy) gets one of three verdicts:

    supported       the difference A − B is significant (Welch's t-test, p < alpha after Holm's
                    correction when several comparisons decide one claim) and in the claimed direction
    not supported   significant in the other direction, or the 95% interval of A − B lies entirely below
                    `min_effect` (whatever the difference is, it is too small to matter)
    inconclusive    neither: with this many seeds the data cannot tell

Welch's test does not assume equal variances (a variant without BatchNorm may be far noisier).
With 3 seeds per arm it only detects large effects; the intervals say how large.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass(frozen=True)
class Comparison:
    """A − B for samples a and b: difference of means, Welch's t, its degrees of freedom, p, 95% interval."""

    name: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    t: float
    df: float
    p: float
    ci: tuple[float, float]


def welch(a: list[float], b: list[float], name: str = "") -> Comparison:
    """Welch's unequal-variance t-test of mean(a) − mean(b), two-sided, with its 95% interval."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per arm, got {len(a)} and {len(b)}")
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    diff = ma - mb
    if se == 0:  # identical constant samples: no spread at all
        p = 1.0 if diff == 0 else 0.0
        return Comparison(name, len(a), len(b), ma, mb, diff, math.copysign(math.inf, diff) if diff else 0.0,
                          math.inf, p, (diff, diff))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    p = 2 * stats.t.sf(abs(t), df)
    half = stats.t.ppf(0.975, df) * se
    return Comparison(name, len(a), len(b), ma, mb, diff, t, df, float(p), (diff - half, diff + half))


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): controls the family-wise error rate."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(c: Comparison, p_adjusted: float | None = None, alpha: float = 0.05, min_effect: float = 0.005) -> str:
    """The verdict on "A > B" from one comparison (min_effect in the units of the data, e.g. 0.005 = 0.5 points)."""
    p = c.p if p_adjusted is None else p_adjusted
    if p < alpha:
        return SUPPORTED if c.diff > 0 else NOT_SUPPORTED
    if c.ci[1] < min_effect:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def all_of(verdicts: list[str]) -> str:
    """A claim that needs every comparison to hold (e.g. "better than each alternative")."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def any_of(comparisons: list[Comparison], p_adjusted: list[float], alpha: float = 0.05,
           min_effect: float = 0.005) -> str:
    """A claim that holds if it holds in some condition (e.g. "stabler" at some learning rate) and is
    contradicted in none: supported if one comparison is, and none is significant the other way."""
    verdicts = [verdict(c, p, alpha, min_effect) for c, p in zip(comparisons, p_adjusted, strict=True)]
    opposite = any(p < alpha and c.diff < 0 for c, p in zip(comparisons, p_adjusted, strict=True))
    if SUPPORTED in verdicts and not opposite:
        return SUPPORTED
    if verdicts and (opposite or all(v == NOT_SUPPORTED for v in verdicts)):
        return NOT_SUPPORTED
    return INCONCLUSIVE
