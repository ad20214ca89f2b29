"""The report's statistics: per-configuration t-intervals, Welch's test, Holm's adjustment, and
the Pareto front of cost against accuracy. Plain numpy and scipy.special; checked against
scipy.stats in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import stdtr, stdtrit  # Student's t CDF and its inverse (light imports)

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stats:
    """n, mean, sample std and the 95% t-interval of the mean (NaN where n is too small)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with Welch's 95% interval, degrees of freedom and two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    dof: float


def _finite(values: Iterable[Any]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _t_quantile(dof: float) -> float:
    """t such that a t-distributed variable with `dof` degrees of freedom stays within +-t with
    probability CONFIDENCE (scipy.stats.t.ppf(0.975, dof); scipy.stats is a slow import)."""
    return float(stdtrit(dof, 0.5 + CONFIDENCE / 2))


def finite_mean(values: Iterable[Any]) -> float:
    x = _finite(values)
    return float(x.mean()) if x.size else math.nan


def summarize(values: Iterable[Any]) -> Stats:
    """Stats of the finite values. >>> summarize([1, 2, 3]).mean
    2.0
    """
    x = _finite(values)
    nan = math.nan
    if x.size == 0:
        return Stats(0, nan, nan, nan, nan)
    mean = float(x.mean())
    if x.size == 1:
        return Stats(1, mean, nan, nan, nan)
    std = float(x.std(ddof=1))
    half = _t_quantile(x.size - 1) * std / math.sqrt(x.size)
    return Stats(int(x.size), mean, std, mean - half, mean + half)


def welch(a: Iterable[Any], b: Iterable[Any]) -> Difference:
    """Difference of means of `a` and `b` with Welch's interval and t-test."""
    a, b = _finite(a), _finite(b)
    nan = math.nan
    if a.size == 0 or b.size == 0:
        return Difference(nan, nan, nan, nan, nan)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Difference(diff, nan, nan, nan, nan)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:  # no spread on either side: the difference is exact, no test is possible
        return Difference(diff, diff, diff, nan, nan)
    dof = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
    se = math.sqrt(va + vb)
    half = _t_quantile(dof) * se
    # Welch's two-sided p, the number scipy.stats.ttest_ind(a, b, equal_var=False) gives (the
    # tests check it); computed directly because ttest_ind costs ~11 ms a call here.
    p = float(2 * stdtr(dof, -abs(diff) / se))
    return Difference(diff, diff - half, diff + half, p, dof)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment; NaN entries stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(order) - rank) * p[i])
        out[i] = min(1.0, running)
    return out.tolist()




def pareto_front(cost: Sequence[float], value: Sequence[float], *,
                 maximize: bool = True) -> list[int]:
    """Indices of the points no other point beats on both axes (lower cost, better value),
    ordered by cost. NaNs are never on the front.

    >>> pareto_front([1, 2, 3], [0.5, 0.4, 0.7])
    [0, 2]
    """
    sign = 1 if maximize else -1
    ok = [i for i in range(len(cost)) if not (math.isnan(cost[i]) or math.isnan(value[i]))]
    front, best = [], -math.inf
    for i in sorted(ok, key=lambda i: (cost[i], -sign * value[i])):
        if sign * value[i] > best:
            front.append(i)
            best = sign * value[i]
    return front
