"""PLS and VIP against scikit-learn and the textbook formulas."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression

from faceprobe import PLS, channel_vip, fit_shared, top_k_channels, top_k_neurons, vip_scores
from faceprobe.errors import ProbeInputError
from faceprobe.pls import channel_columns

ATTRS = ["x_weights_", "x_loadings_", "x_scores_", "x_rotations_"]


def _random(n=120, m=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, m)) + rng.uniform(-3, 3, size=m)
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=n)
    return X, y


def _structured(n=150, m=60, seed=1):
    """Low-rank data with a binary target, like a layer output with a planted attribute."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 4))
    X = latent @ rng.normal(size=(4, m)) + 0.05 * rng.normal(size=(n, m))
    X = np.maximum(X, 0)  # ReLU-like: many zeros, positive mean
    y = (latent[:, 0] > 0).astype(float)
    return X, y


def _signs(ours, ref):
    return np.sign(np.sum(ours * ref, axis=0))


@pytest.mark.parametrize("make", [_random, _structured])
@pytest.mark.parametrize("block_bytes", [None, 2000])
def test_pls1_matches_sklearn_float64(make, block_bytes):
    X, y = make()
    kw = {} if block_bytes is None else {"block_bytes": block_bytes}
    ours = PLS(8, **kw).fit(X, y)
    ref = PLSRegression(8, scale=False).fit(X, y)
    s = _signs(ours.x_weights_, ref.x_weights_)
    for name in ATTRS:
        np.testing.assert_allclose(getattr(ours, name) * s, getattr(ref, name), atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.y_loadings_ * s, ref.y_loadings_, atol=1e-6)
    np.testing.assert_allclose(ours.x_mean_, X.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(ours.transform(X) * s, ref.transform(X), atol=1e-6)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X).ravel(), atol=1e-6)
    assert ours.predict(X).shape == (len(y),)


def test_pls2_matches_sklearn_float64():
    X, y = _random(n=150, m=30)
    rng = np.random.default_rng(3)
    Y = np.c_[y, X[:, 5] - X[:, 7] + rng.normal(size=150), rng.normal(size=150)]
    ours = PLS(5).fit(X, Y)
    # sklearn iterates NIPALS' inner loop to a tolerance; we solve it exactly, so make sklearn converge fully.
    ref = PLSRegression(5, scale=False, tol=1e-30, max_iter=100_000).fit(X, Y)
    s = _signs(ours.x_weights_, ref.x_weights_)
    for name in ATTRS:
        np.testing.assert_allclose(getattr(ours, name) * s, getattr(ref, name), atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), atol=1e-6)


def test_float32_stays_float32_and_is_close():
    X, y = _structured(n=300, m=500)
    X32 = X.astype(np.float32)
    ours = PLS(8, block_bytes=50_000).fit(X32, y)
    ref = PLS(8).fit(X, y)
    assert ours.x_weights_.dtype == np.float32
    assert ours.x_rotations_.dtype == np.float32
    assert ours.vip_.dtype == np.float32
    assert ours.transform(X32).dtype == np.float32
    s = _signs(ours.x_weights_, ref.x_weights_)
    np.testing.assert_allclose(
        ours.x_scores_[:, :4] * s[:4],
        ref.x_scores_[:, :4],
        rtol=0,
        atol=2e-3 * np.abs(ref.x_scores_[:, :4]).max(),
    )
    np.testing.assert_allclose(ours.vip_, ref.vip_, atol=1e-2)


def test_float16_input_is_read_blockwise_as_float32():
    X, y = _structured(n=200, m=100)
    X16 = X.astype(np.float16)
    ours = PLS(4, block_bytes=4000).fit(X16, y)
    ref = PLS(4).fit(X16.astype(np.float32), y)
    assert ours.x_weights_.dtype == np.float32
    np.testing.assert_allclose(ours.x_scores_, ref.x_scores_, rtol=1e-4, atol=1e-4)


def test_fit_does_not_modify_or_copy_x():
    X, y = _structured()
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    before = X32.copy()
    PLS(8).fit(X32, y)
    np.testing.assert_array_equal(X32, before)


def test_transform_equals_training_scores():
    X, y = _random()
    pls = PLS(6).fit(X, y)
    np.testing.assert_allclose(pls.transform(X), pls.x_scores_, atol=1e-9)
    np.testing.assert_allclose(pls.fit_transform(X, y), pls.x_scores_)


def test_vip_matches_direct_formula_and_has_unit_mean_square():
    X, y = _structured()
    pls = PLS(8).fit(X, y)
    W, T, Q = pls.x_weights_, pls.x_scores_, pls.y_loadings_
    m, A = W.shape
    ss = np.array([Q[0, a] ** 2 * T[:, a] @ T[:, a] for a in range(A)])
    direct = np.array(
        [
            np.sqrt(m * sum(ss[a] * (W[j, a] / np.linalg.norm(W[:, a])) ** 2 for a in range(A)) / ss.sum())
            for j in range(m)
        ]
    )
    np.testing.assert_allclose(pls.vip_, direct, rtol=1e-10)
    assert np.mean(pls.vip_**2) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(vip_scores(W, T, Q), pls.vip_)


def test_vip_ranks_the_planted_features_first():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 200))
    y = (X[:, 10] + X[:, 50] > 0).astype(float)
    vip = PLS(4).fit(X, y).vip_
    assert set(top_k_neurons(vip, 2)) == {10, 50}


def test_channel_vip_and_top_k_in_chw_and_channels_last_layout():
    shape = (4, 3, 2)  # C, H, W
    vip = np.zeros(24)
    vip[2 * 6 : 3 * 6] = 3.0  # channel 2 (contiguous in C,H,W order)
    vip[0] = 1.0
    np.testing.assert_allclose(channel_vip(vip, shape), [1 / 6, 0, 3, 0])
    assert list(top_k_channels(vip, shape, k=2)) == [2, 0]
    cols = channel_columns([2], shape)
    np.testing.assert_array_equal(cols, np.arange(12, 18))
    # channels last: (H, W, C); channel c's neurons are strided by C
    vip_last = np.zeros(24)
    vip_last[1::4] = 2.0
    np.testing.assert_allclose(channel_vip(vip_last, (3, 2, 4), channels_last=True), [0, 2, 0, 0])
    np.testing.assert_array_equal(channel_columns([1], (3, 2, 4), channels_last=True), np.arange(1, 24, 4))
    # a fully connected layer: channels are neurons
    np.testing.assert_allclose(channel_vip([1.0, 2.0], (2,)), [1.0, 2.0])
    with pytest.raises(ProbeInputError, match="do not fit"):
        channel_vip(vip, (5, 5))


def test_top_k_neurons_is_sorted_and_stable():
    vip = np.array([0.5, 2.0, 2.0, 1.0, 3.0])
    assert list(top_k_neurons(vip, 3)) == [4, 1, 2]
    assert list(top_k_neurons(vip, 10)) == [4, 1, 2, 3, 0]


def test_constant_feature_gets_zero_vip():
    X, y = _random()
    X[:, 4] = 7.0
    pls = PLS(8).fit(X, y)
    assert pls.vip_[4] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.isfinite(pls.x_rotations_))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_is_refused_naming_the_feature(bad):
    X, y = _random()
    X[3, 17] = bad
    with pytest.raises(ProbeInputError, match=r"NaN or inf.*feature 17"):
        PLS(4).fit(X.astype(np.float32), y)


def test_bad_targets_and_sizes_are_refused():
    X, y = _random(n=20, m=10)
    with pytest.raises(ProbeInputError, match="constant"):
        PLS(2).fit(X, np.ones(20))
    with pytest.raises(ProbeInputError, match="needs more than 8 samples"):
        PLS(8).fit(X[:8], y[:8])
    with pytest.raises(ProbeInputError, match="at least 12 features"):
        PLS(12).fit(X, y)
    with pytest.raises(ProbeInputError, match="one row per sample"):
        PLS(2).fit(X, y[:5])
    with pytest.raises(ProbeInputError, match="2-D"):
        PLS(2).fit(X[0], y)
    with pytest.raises(ProbeInputError, match="positive integer"):
        PLS(0).fit(X, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.0, 0.25, 0.1, 3.0, 1e4])
def test_constant_layer_is_refused_clearly(value, dtype):
    # Unbalanced labels: their mean is not exact in binary, so X'y of a constant X is rounding, not zero,
    # and a fit on it used to end in a singular P'W instead of this message.
    X = np.full((300, 12), value, dtype=dtype)
    y = np.random.default_rng(0).integers(0, 2, 300)
    with pytest.raises(ProbeInputError, match="constant layer"):
        PLS(8).fit(X, y)
    (shared,) = fit_shared(X, y[:, None].astype(float), (np.arange(300) % 3 > 0)[:, None], 8)
    assert isinstance(shared, ProbeInputError) and "constant layer" in str(shared)


def test_rank_deficient_x_keeps_fewer_components():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 20))
    y = X[:, 0] + 0.1 * rng.normal(size=50)
    pls = PLS(6).fit(X, y)
    assert pls.n_components_ == 2
    assert pls.transform(X).shape == (50, 2)


@pytest.mark.parametrize("big", [False, True])
def test_a_column_ordered_or_strided_x_fits_exactly_as_its_row_ordered_copy(monkeypatch, big):
    """``X[:, columns]`` is column-ordered; its rows are read in row order (copied whole when small, a
    block at a time when large), so the fit is the row-ordered one's to the last bit."""
    import faceprobe.pls

    if big:  # every X counts as large: copied block by block
        monkeypatch.setattr(faceprobe.pls, "_COPY_BYTES", 0)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3000), dtype=np.float32)
    y = (X[:, :10].sum(axis=1) > 0).astype(float)
    expected = PLS(4).fit(X, y)
    for other in (np.asfortranarray(X), np.repeat(X, 2, axis=1)[:, ::2]):
        assert not other.flags.c_contiguous
        fitted = PLS(4).fit(other, y)
        assert np.array_equal(fitted.x_scores_, expected.x_scores_)
        assert np.array_equal(fitted.vip_, expected.vip_)
        assert np.array_equal(fitted.transform(other), expected.transform(X))
