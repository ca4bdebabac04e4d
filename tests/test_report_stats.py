"""The report's 95% intervals against published values: Wilson for accuracies, Fisher z for correlations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, pearsonr

from faceprobe.report.stats import MIN_EVAL, fisher_interval, mean_r_interval, too_few, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombes_table(successes, n, low, high):
    got = wilson_interval(successes / n, n)
    assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)


def test_wilson_interval_matches_scipy_and_vectorises():
    n = np.array([10, 64, 100, 6144, 50])
    k = np.array([8, 40, 50, 5000, 50])
    low, high = wilson_interval(k / n, n)
    for i in range(len(n)):
        ci = binomtest(int(k[i]), int(n[i])).proportion_ci(confidence_level=0.95, method="wilson")
        assert (low[i], high[i]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert np.all(low <= k / n) and np.all(k / n <= high)
    assert high[4] == 1.0 and 0.9 < low[4] < 1.0  # a perfect score keeps an interval below 1


def test_wilson_interval_is_nan_without_images_or_accuracy():
    low, high = wilson_interval([0.5, np.nan, 0.7], [0, 10, -1])
    assert np.isnan(low).all() and np.isnan(high).all()


def test_too_few_images_is_where_the_interval_at_chance_reaches_ten_points():
    def half(n):
        low, high = wilson_interval(0.5, n)
        return (high - low) / 2

    assert half(64) > 0.1 and half(MIN_EVAL - 1) > 0.095 and half(MIN_EVAL) < 0.1
    assert too_few(64) and too_few(MIN_EVAL - 1) and not too_few(MIN_EVAL) and not too_few(6144)


def test_fisher_interval_matches_the_textbook_and_scipy():
    # r = 0.5 over 50 pairs: atanh(0.5) = 0.5493 +- 1.96 / sqrt(47) -> tanh: [0.2574, 0.6833]
    low, high = fisher_interval(0.5, 50)
    assert (low, high) == pytest.approx((0.2574, 0.6833), abs=1e-4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    result = pearsonr(x, y)
    ci = result.confidence_interval(0.95)
    assert fisher_interval(result.statistic, 40) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert np.isnan(fisher_interval(0.9, 3)).all()  # no interval from 3 pairs


def test_mean_r_interval_widens_with_the_spread_of_projections():
    n = [50, 50, 50, 50]
    tight = mean_r_interval([0.90, 0.91, 0.92, 0.93], n)
    loose = mean_r_interval([0.50, 0.95, 0.70, 0.99], n)
    assert tight[0] < 0.915 < tight[1] and tight[1] - tight[0] < 0.05
    assert loose[1] - loose[0] > 0.3
    assert mean_r_interval([0.5, np.nan], [50, 50]) == pytest.approx(tuple(fisher_interval(0.5, 50)))
    assert np.isnan(mean_r_interval([np.nan], [50])).all()
