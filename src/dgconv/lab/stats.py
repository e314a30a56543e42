"""Small-sample statistics for the results document: means, standard deviations, Student-t confidence intervals,
Welch intervals for differences, and the verdict rules that read them.

Only the standard library (no SciPy at run time): the t quantile is found by bisection on the CDF, which is the
regularized incomplete beta function evaluated by its continued fraction (Numerical Recipes, §6.4). The tests
compare every function with SciPy.

Verdicts come from intervals, never from point estimates: a claim "A is at least as good as B" *agrees* when
the 95 % interval of ``A - B`` lies above ``-margin``, *disagrees* when it lies below it, and is *not resolved at
this n* when it straddles it.

Example::

    >>> s = summarize([0.91, 0.93, 0.92])
    >>> round(s.mean, 4), s.n, round(s.ci[0], 4)
    (0.92, 3, 0.8952)
    >>> d = welch([0.91, 0.93, 0.92], [0.90, 0.89, 0.91])
    >>> round(d.diff, 3), [round(v, 4) for v in d.ci], verdict(d).word
    (0.02, [-0.0027, 0.0427], 'not resolved at this n')
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "Difference", "summarize", "welch", "t_quantile", "t_cdf", "verdict", "Verdict", "points",
           "side_of_zero", "correlation_reading"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` (> 0, not necessarily integer) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2) = 4.303``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and the ``level`` confidence interval of the mean (``None`` for n < 2)."""

    n: int
    mean: float
    sd: float | None
    ci: tuple[float, float] | None
    level: float = 0.95


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, standard deviation and t interval of ``values`` (finite numbers; at least one)."""
    xs = [float(v) for v in values]
    if not xs or not all(math.isfinite(v) for v in xs):
        raise ValueError(f"summarize needs finite values, got {list(values)}")
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return Summary(len(xs), m, None, None, level)
    sd = statistics.stdev(xs)
    half = t_quantile(0.5 + level / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return Summary(len(xs), m, sd, (m - half, m + half), level)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its ``level`` interval (``None`` when it cannot be formed) and how it was formed."""

    diff: float
    ci: tuple[float, float] | None
    df: float | None
    n_a: int
    n_b: int
    method: str
    level: float = 0.95


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """The difference of means ``a - b`` and its Welch interval (unequal variances, Welch-Satterthwaite df).

    When one side has a single value, the interval uses the other side's variance for both (a prediction
    interval under equal variances: ``se = s * sqrt(1 + 1/n)``, ``df = n - 1``) and says so in ``method``; with a
    single value on both sides there is no interval.
    """
    sa, sb = summarize(a, level), summarize(b, level)
    diff = sa.mean - sb.mean
    q = 0.5 + level / 2
    if sa.n >= 2 and sb.n >= 2:
        va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n  # type: ignore[operator]
        se = math.sqrt(va + vb)
        if se == 0:
            return Difference(diff, (diff, diff), math.inf, sa.n, sb.n, "welch", level)
        df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
        half = t_quantile(q, df) * se
        return Difference(diff, (diff - half, diff + half), df, sa.n, sb.n, "welch", level)
    if sa.n + sb.n >= 3:
        many = sa if sa.n >= 2 else sb
        se = many.sd * math.sqrt(1 + 1 / many.n)  # type: ignore[operator]
        df = many.n - 1
        half = t_quantile(q, df) * se
        return Difference(diff, (diff - half, diff + half), df, sa.n, sb.n, "one run against the other side's spread", level)
    return Difference(diff, None, None, sa.n, sb.n, "single runs: no interval", level)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict: ``"agrees"``, ``"disagrees"``, ``"not resolved at this n"`` or ``"not enough seeds"``,
    and why."""

    word: str
    reason: str

    def __str__(self) -> str:
        return self.word


#: Runs each side of a comparison needs before any verdict is read from it.
MIN_SEEDS = 2
NOT_ENOUGH = "not enough seeds"


def verdict(d: Difference, margin: float = 0.0, scale: float = 1.0, unit: str = "") -> Verdict:
    """Read "``a`` is at least as good as ``b`` up to ``margin``" (``a - b >= -margin``) from the interval of ``d``.

    agrees: the whole interval lies above ``-margin``; disagrees: the whole interval lies below ``-margin``;
    otherwise (or without an interval) not resolved at this n. Fewer than 2 runs on either side give no verdict at
    all: ``"not enough seeds"``. ``scale`` and ``unit`` only format the reason (``scale=100, unit=" points"`` for
    accuracies).
    """
    if min(d.n_a, d.n_b) < MIN_SEEDS:
        return Verdict(NOT_ENOUGH, f"n = {d.n_a} vs {d.n_b}; a verdict needs at least {MIN_SEEDS} seeds per side")
    if d.ci is None:
        return Verdict("not resolved at this n", f"{d.method}")
    lo, hi = d.ci
    level = f"the {int(round(d.level * 100))} % interval"
    threshold = -margin * scale + 0.0  # + 0.0: no "-0"
    at = f"{threshold:g}{unit if threshold else ''}"
    if lo > -margin:
        return Verdict("agrees", f"{level} lies above {at}")
    if hi < -margin:
        return Verdict("disagrees", f"{level} lies below {at}")
    return Verdict("not resolved at this n", f"{level} contains {at}")


def points(d: Difference) -> str:
    """A difference of accuracies in points with its interval and n (how the results document writes them).

    >>> points(welch([0.9, 0.92], [0.8, 0.82]))
    '+10.00 points (95 % CI [+3.92, +16.08]; n = 2 vs 2)'
    """
    ci = "no interval" if d.ci is None else f"95 % CI [{100 * d.ci[0]:+.2f}, {100 * d.ci[1]:+.2f}]"
    note = "" if d.method == "welch" else f", {d.method}"
    return f"{100 * d.diff:+.2f} points ({ci}; n = {d.n_a} vs {d.n_b}{note})"


def side_of_zero(values: Sequence[float], low: float = -1.0, high: float = 1.0
                 ) -> tuple[Summary, tuple[float, float] | None, str]:
    """Where the interval of the mean of ``values`` (clipped to ``[low, high]``, e.g. a correlation's range) lies:
    ``"above"`` or ``"below"`` 0, ``"contains"`` it, ``"single"`` (one value, no interval) or ``"constant"`` (all
    values equal: a zero-width interval says nothing about the spread). Returns the summary, the clipped interval
    (None for single and constant) and the position."""
    z = summarize(values)
    if z.ci is None:
        return z, None, "single"
    if z.sd == 0:
        return z, None, "constant"
    ci = (max(low, z.ci[0]), min(high, z.ci[1]))
    return z, ci, "above" if ci[0] > 0 else "below" if ci[1] < 0 else "contains"


def correlation_reading(values: Sequence[float]) -> str:
    """How the results read a mean correlation over runs: ``+0.55, 95 % CI [+0.15, +0.94] over 4 runs: **yes (the
    interval lies above 0)**`` (:func:`side_of_zero`'s position in words).

    >>> correlation_reading([0.8, 0.9, 0.95])
    '+0.88, 95 % CI [+0.69, +1.00] over 3 runs: **yes (the interval lies above 0)**'
    """
    z, ci, side = side_of_zero(values)
    word = {"above": "yes (the interval lies above 0)", "below": "no, the reverse (the interval lies below 0)",
            "contains": "not resolved at this n (the interval contains 0)"}.get(side, "not resolved at this n")
    interval = "" if ci is None else f", 95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    return f"{z.mean:+.2f}{interval} over {z.n} runs: **{word}**"
