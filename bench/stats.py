"""The statistics a fair Table I needs: a cell's Wilson interval, a row's mean ± std over folds and its pooled
accuracy, and paired tests between rows (McNemar stratified by fold through Cochran–Mantel–Haenszel, then Holm's
correction over the pairs compared). Pure Python: the robot side never installs SciPy.

    from bench.stats import wilson, paired_test, holm
    low, high = wilson(412, 500)
    p = paired_test({"iw0": (a_right, b_right), ...}).p_value

A paired test compares two rows on the same requests: only the discordant ones (one row right, the other wrong)
carry information. Within fold k, ``b_k`` requests went A's way and ``c_k`` B's. Every pair is its own stratum
nested in its fold, so the CMH statistic is (Σ b_k − Σ c_k)² / Σ (b_k + c_k), chi-square with one degree of
freedom. Below ``EXACT_BELOW`` discordant requests the p-value is the exact two-sided binomial one instead.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
EXACT_BELOW = 25
"""Discordant requests below which the p-value is the exact binomial one (the chi-square approximation is poor)."""


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (0, 1) when nothing was scored."""
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over folds (the paper's form); std 0 for a single value."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class PairedTest:
    a_only: int
    """Requests row A got right and row B wrong, over all strata."""
    b_only: int
    n: int
    """Requests compared (concordant ones included)."""
    statistic: float
    p_value: float
    exact: bool


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(A right and B wrong, B right and A wrong) over paired outcomes."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} and {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    return a_only, b_only


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (sum of outcomes as likely or less)."""
    if n == 0:
        return 1.0
    probabilities = [math.comb(n, i) / 2**n for i in range(n + 1)]
    observed = probabilities[k]
    return min(1.0, sum(p for p in probabilities if p <= observed * (1 + 1e-9)))


def chi2_one_df_sf(x: float) -> float:
    """P(χ²₁ > x)."""
    return math.erfc(math.sqrt(max(x, 0.0) / 2))


def paired_test(strata: Mapping[str, tuple[Sequence[bool], Sequence[bool]]]) -> PairedTest:
    """McNemar's test stratified by fold (CMH over the pairs, each nested in its fold): ``strata`` maps a fold to
    the two rows' outcomes on the same requests, in the same order."""
    a_only = b_only = n = 0
    for name, (a, b) in strata.items():
        try:
            x, y = discordant(a, b)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        a_only, b_only, n = a_only + x, b_only + y, n + len(a)
    total = a_only + b_only
    if total == 0:
        return PairedTest(0, 0, n, 0.0, 1.0, exact=True)
    statistic = (a_only - b_only) ** 2 / total
    if total < EXACT_BELOW:
        return PairedTest(a_only, b_only, n, statistic, binomial_two_sided(a_only, total), exact=True)
    return PairedTest(a_only, b_only, n, statistic, chi2_one_df_sf(statistic), exact=False)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, kept monotone, capped at 1)."""
    order = sorted(p_values, key=lambda name: p_values[name])
    m, running, adjusted = len(order), 0.0, {}
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted
