"""Probes for targets beyond binary ones: PLS-DA + QDA (balanced accuracy) and PLS regression (R^2, MAE)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from faceprobe import PLS, MulticlassProbe, RegressionProbe, fit_shared
from faceprobe.errors import ProbeInputError


def _layer(n: int = 600, m: int = 200, seed: int = 0) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(size=(n, m)), 0).astype(np.float32), rng


def test_regression_probe_reads_a_planted_linear_target_and_not_noise() -> None:
    X, rng = _layer()
    age = 40 + 12 * (X[:, :6] @ rng.normal(size=6)) + rng.normal(scale=0.5, size=len(X))
    probe = RegressionProbe(8).fit(X[:300], age[:300])
    assert probe.score(X[300:], age[300:]) > 0.95
    assert probe.mae(X[300:], age[300:]) < 0.2 * np.abs(age - age.mean()).mean()
    noise = rng.normal(size=len(X))
    chance = RegressionProbe(8).fit(X[:300], noise[:300]).score(X[300:], noise[300:])
    assert chance < 0.05  # the mean predictor scores 0; a probe fitted on noise does worse on new rows


def test_regression_probe_predicts_as_pls_regression_and_reads_units_by_least_squares() -> None:
    X, rng = _layer(n=200, m=40)
    y = X[:, 0] * 3 + rng.normal(size=len(X))
    probe = RegressionProbe(3).fit(X, y)
    reference = PLSRegression(3, scale=False).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(probe.predict(X), reference.predict(X.astype(np.float64)).ravel(), rtol=1e-3)
    units = RegressionProbe(None).fit(X[:, :2], y)
    assert units.pls_ is None and units.coef_.shape == (2,)
    assert abs(units.coef_[0] - 3) < 0.3
    with pytest.raises(ProbeInputError, match="constant"):
        RegressionProbe(3).fit(X, np.ones(len(X)))
    with pytest.raises(ProbeInputError, match="NaN"):
        RegressionProbe(3).fit(X, np.where(np.arange(len(X)) == 3, np.nan, y))


def test_multiclass_probe_balanced_accuracy_on_unbalanced_classes() -> None:
    X, rng = _layer(n=900)
    # four classes, 70% / 15% / 10% / 5%: each moves its own few neurons
    y = rng.choice(4, size=len(X), p=[0.7, 0.15, 0.1, 0.05])
    for c in range(1, 4):
        X[y == c, 3 * c : 3 * c + 3] += 2.5
    probe = MulticlassProbe(8).fit(X[:500], y[:500])
    assert probe.pls_.y_loadings_.shape[0] == 4  # PLS2 on the one-hot classes
    assert probe.score(X[500:], y[500:]) > 0.9
    # labels nothing predicts: balanced accuracy stays near 1/4, where plain accuracy would reach ~0.7
    noise = rng.choice(4, size=len(X), p=[0.7, 0.15, 0.1, 0.05])
    chance = MulticlassProbe(8).fit(X[:500], noise[:500])
    assert abs(chance.score(X[500:], noise[500:]) - 0.25) < 0.12
    assert set(MulticlassProbe(None).fit(X[:500, :12], y[:500]).predict(X[500:, :12])) <= {0, 1, 2, 3}


@pytest.mark.parametrize("target", ["multiclass", "continuous"])
def test_vip_mean_square_is_one_for_every_kind(target: str) -> None:
    X, rng = _layer(n=300, m=120)
    y = rng.integers(0, 3, size=len(X)) if target == "multiclass" else X[:, 0] + rng.normal(size=len(X))
    probe = (MulticlassProbe if target == "multiclass" else RegressionProbe)(5).fit(X, y)
    np.testing.assert_allclose(np.mean(probe.pls_.vip_.astype(np.float64) ** 2), 1.0, rtol=1e-4)


def test_fit_shared_fits_multi_column_targets_as_their_own_pls2() -> None:
    X, rng = _layer(n=300, m=80)
    labels = rng.integers(0, 3, size=len(X))
    one_hot = np.eye(3)[labels]
    binary = rng.integers(0, 2, size=len(X)).astype(np.float64)
    masks = np.zeros((len(X), 2), dtype=bool)
    masks[:200, 0], masks[100:, 1] = True, True
    Y = np.column_stack([one_hot, binary])
    shared = fit_shared(X, Y, masks, 4, widths=[3, 1])
    alone = PLS(4).fit(X[:200], one_hot[:200])
    np.testing.assert_allclose(
        np.abs(shared[0].x_rotations_), np.abs(alone.x_rotations_), rtol=2e-3, atol=1e-5
    )
    np.testing.assert_allclose(shared[0].vip_, alone.vip_, rtol=2e-3)
    single = PLS(4).fit(X[100:], binary[100:])
    np.testing.assert_allclose(np.abs(shared[1].x_scores_), np.abs(single.x_scores_), rtol=2e-3, atol=1e-4)
    with pytest.raises(ProbeInputError, match="widths"):
        fit_shared(X, Y, masks, 4, widths=[2, 1])
