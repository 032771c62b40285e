"""The statistics behind a verdict: Welch's t-test, a seed-and-image test for per-class figures, Holm's
correction, intervals, and the rule.

A claim "A is better than B" (higher is better, e.g. validation accuracy) gets one of four verdicts:

    supported       the difference A − B is significant (p < alpha, Holm-adjusted when several comparisons
                    decide one claim) and in the claimed direction
    not supported   significant in the other direction, or the interval of A − B lies entirely below
                    `min_effect` (whatever the difference is, it is too small to matter)
    inconclusive    neither: with this many seeds the data cannot tell
    untestable      there is no spread to test against (e.g. every run of both arms at chance, or two
                    constant samples): no t-test is defined, so nothing is claimed either way

Both rules use the same family: the p-value is Holm-adjusted over the m comparisons of a claim, and the
"too small" interval is the Bonferroni interval at level 1 − alpha/m (the simultaneous interval that goes
with Holm's correction), so a claim never passes one rule on an unadjusted figure.

Welch's test does not assume equal variances (a variant without BatchNorm may be far noisier).
With 3 seeds per arm it only detects large effects; the intervals say how large.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, UNTESTABLE = "supported", "not supported", "inconclusive", "untestable"


@dataclass(frozen=True)
class Comparison:
    """A − B: difference of means, its standard error, t, degrees of freedom, p and 95% interval (p, t and the
    interval are NaN when se is 0: untestable)."""

    name: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    se: float
    t: float
    df: float
    p: float
    ci: tuple[float, float]

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The two-sided interval of A − B at this level (e.g. 1 − 0.05/m for a Bonferroni family of m)."""
        from scipy import stats

        if not self.testable:
            return (math.nan, math.nan)
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return (self.diff - half, self.diff + half)


def _comparison(name: str, n_a: int, n_b: int, ma: float, mb: float, se: float, df: float) -> Comparison:
    from scipy import stats

    diff = ma - mb
    if not se > 0:  # no spread at all: a t statistic is undefined, whatever the means
        return Comparison(name, n_a, n_b, ma, mb, diff, 0.0, math.nan, math.nan, math.nan, (math.nan, math.nan))
    t = diff / se
    half = float(stats.t.ppf(0.975, df)) * se
    return Comparison(name, n_a, n_b, ma, mb, diff, se, t, df, float(2 * stats.t.sf(abs(t), df)),
                      (diff - half, diff + half))


def welch(a: list[float], b: list[float], name: str = "") -> Comparison:
    """Welch's unequal-variance t-test of mean(a) − mean(b), two-sided, with its 95% interval."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per arm, got {len(a)} and {len(b)}")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else math.nan
    return _comparison(name, len(a), len(b), statistics.fmean(a), statistics.fmean(b), math.sqrt(va + vb), df)


def seed_and_image_se(values: list[float], n_images: int) -> tuple[float, float, float]:
    """(mean, standard error, degrees of freedom) of an accuracy measured on the same n_images test images
    by k runs (seeds): se² = s²/k (training noise, averaged over seeds) + p(1−p)/n (which images the test
    set happens to hold — shared by every seed, so not averaged). Satterthwaite's df: the image term is
    binomial with effectively infinite df, the seed term has k − 1."""
    k = len(values)
    mean = statistics.fmean(values)
    seed_var = statistics.variance(values) / k if k > 1 else 0.0
    image_var = mean * (1 - mean) / n_images
    var = seed_var + image_var
    df = math.inf if seed_var == 0 else var**2 / (seed_var**2 / (k - 1))
    return mean, math.sqrt(var), df


def seed_and_image_interval(values: list[float], n_images: int, level: float = 0.95) -> tuple[float, float]:
    """The interval of a per-class accuracy over k seeds on n_images test images (see seed_and_image_se);
    with one run it is the normal interval of the test images alone."""
    from scipy import stats

    mean, se, df = seed_and_image_se(values, n_images)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    return max(0.0, mean - half), min(1.0, mean + half)


def paired_seed_and_image(a: list[float], b: list[float], n_a: int, n_b: int, name: str = "") -> Comparison:
    """A − B for two figures measured by the same k runs (a[i], b[i] from run i; e.g. two classes' accuracy):
    the seed term is the spread of the per-run differences (paired), the image term the binomial noise of
    each figure's own test images (disjoint images: independent)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired figures need the same runs on both sides")
    k = len(a)
    d = [x - y for x, y in zip(a, b, strict=True)]
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    seed_var = statistics.variance(d) / k if k > 1 else 0.0
    var = seed_var + ma * (1 - ma) / n_a + mb * (1 - mb) / n_b
    df = math.inf if seed_var == 0 else var**2 / (seed_var**2 / (k - 1))
    return _comparison(name, k, k, ma, mb, math.sqrt(var), df)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): controls the family-wise error rate.
    NaN (untestable) p-values stay NaN and do not count towards the family."""
    tested = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    order = sorted(tested, key=lambda i: p_values[i])
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(c: Comparison, p_adjusted: float | None = None, family: int = 1, alpha: float = 0.05,
            min_effect: float = 0.005) -> str:
    """The verdict on "A > B" from one comparison of a family of `family` comparisons (p_adjusted: its
    Holm-adjusted p; min_effect in the units of the data, e.g. 0.005 = 0.5 points)."""
    if not c.testable:
        return UNTESTABLE
    p = c.p if p_adjusted is None else p_adjusted
    if p < alpha:
        return SUPPORTED if c.diff > 0 else NOT_SUPPORTED
    if c.interval(1 - alpha / family)[1] < min_effect:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def family_verdicts(comparisons: list[Comparison], alpha: float = 0.05, min_effect: float = 0.005
                    ) -> tuple[list[str], list[float]]:
    """(verdict of each comparison, its Holm-adjusted p) for comparisons that decide one claim together."""
    adjusted = holm([c.p for c in comparisons])
    family = sum(c.testable for c in comparisons) or 1
    return [verdict(c, p, family, alpha, min_effect) for c, p in zip(comparisons, adjusted, strict=True)], adjusted


def all_of(verdicts: list[str]) -> str:
    """A claim that needs every comparison to hold (e.g. "better than each alternative")."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == NOT_SUPPORTED for v in verdicts):
        return NOT_SUPPORTED
    if verdicts and all(v == UNTESTABLE for v in verdicts):
        return UNTESTABLE
    return INCONCLUSIVE


def any_of(comparisons: list[Comparison], alpha: float = 0.05, min_effect: float = 0.005) -> str:
    """A claim that holds if it holds in some condition (e.g. "stabler" at some learning rate) and is
    contradicted in none: supported if one comparison is, and none is significant the other way; untestable
    comparisons (no spread in either arm) count for neither side."""
    verdicts, adjusted = family_verdicts(comparisons, alpha, min_effect)
    opposite = any(p < alpha and c.diff < 0 for c, p in zip(comparisons, adjusted, strict=True))
    testable = [v for v in verdicts if v != UNTESTABLE]
    if SUPPORTED in verdicts and not opposite:
        return SUPPORTED
    if testable and (opposite or all(v == NOT_SUPPORTED for v in testable)):
        return NOT_SUPPORTED
    return UNTESTABLE if not testable else INCONCLUSIVE
