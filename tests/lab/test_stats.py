"""dgconv.lab.stats against SciPy: t quantiles and CDF, t intervals, Welch intervals, and the verdict rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dgconv.lab.stats import summarize, t_cdf, t_quantile, verdict, welch

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 7, 12.3, 30, 1000])
def test_t_distribution_matches_scipy(df):
    for p in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025):
        assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-10)
    for t in (-5.0, -1.0, 0.0, 0.3, 2.0, 10.0):
        assert t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-9, abs=1e-12)


def test_summary_interval_matches_scipy():
    rng = np.random.default_rng(1)
    for n in (2, 3, 8):
        x = rng.normal(0.9, 0.02, n)
        s = summarize(x)
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert s.mean == pytest.approx(x.mean()) and s.sd == pytest.approx(x.std(ddof=1))
        assert s.ci == pytest.approx((lo, hi))
    one = summarize([0.5])
    assert one.n == 1 and one.sd is None and one.ci is None


def test_welch_matches_scipy_and_handles_single_runs():
    rng = np.random.default_rng(2)
    for na, nb in ((2, 2), (3, 8), (8, 3)):
        a, b = rng.normal(0.92, 0.01, na), rng.normal(0.91, 0.02, nb)
        d = welch(a, b)
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        assert d.diff == pytest.approx(a.mean() - b.mean())
        assert d.ci == pytest.approx((ci.low, ci.high)) and d.method == "welch"
    # one run against three: the three runs' spread stands for both sides (prediction interval, df = 2)
    d = welch([0.90], [0.91, 0.93, 0.92])
    half = stats.t.ppf(0.975, 2) * 0.01 * math.sqrt(1 + 1 / 3)
    assert d.ci == pytest.approx((-0.02 - half, -0.02 + half)) and "spread" in d.method
    assert welch([0.9], [0.8]).ci is None


def test_verdicts_are_read_from_the_interval():
    better = welch([0.95, 0.951, 0.949], [0.90, 0.901, 0.899])
    worse = welch([0.85, 0.851, 0.849], [0.90, 0.901, 0.899])
    noisy = welch([0.95, 0.80, 0.90], [0.90, 0.85, 0.91])
    assert verdict(better).word == "agrees" and verdict(worse).word == "disagrees"
    assert verdict(noisy).word == "not resolved at this n"
    # "comparable within 1 point": 0.5 points worse with a tight interval agrees, 3 points worse disagrees
    assert verdict(welch([0.895, 0.8951, 0.8949], [0.90, 0.9001, 0.8999]), margin=0.01).word == "agrees"
    assert verdict(worse, margin=0.01).word == "disagrees"
    # fewer than 2 seeds on a side: no verdict, whatever the interval (one run against 3 has one)
    for a, b in (([0.9], [0.8]), ([0.99], [0.80, 0.801, 0.799]), ([0.80, 0.801, 0.799], [0.5])):
        v = verdict(welch(a, b))
        assert v.word == "not enough seeds" and f"n = {len(a)} vs {len(b)}" in v.reason
    assert "-1 points" in verdict(noisy, margin=0.01, scale=100, unit=" points").reason
    assert "-0" not in verdict(noisy, scale=100, unit=" points").reason
