"""fit_shared / transform_shared: many targets in lockstep give what one PLS.fit per target gives."""

from __future__ import annotations

import numpy as np
import pytest

from faceprobe.errors import ProbeInputError
from faceprobe.pls import (
    PLS,
    SharedFit,
    _RowBlocks,
    fit_shared,
    fit_transform_shared,
    target_state_bytes,
    transform_shared,
)

FITTED = [
    "x_mean_",
    "y_mean_",
    "x_weights_",
    "x_loadings_",
    "x_rotations_",
    "y_loadings_",
    "vip_",
    "x_scores_",
]


def _layer(n=200, m=60, n_targets=6, seed=0):
    """A layer with planted binary attributes, and row masks of different sizes (30% to all rows)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    X = latent @ rng.normal(size=(6, m)) + 0.3 * rng.normal(size=(n, m)) + rng.uniform(-2, 2, m)
    Y = (latent[:, np.arange(n_targets) % 6] + 0.5 * rng.normal(size=(n, n_targets)) > 0).astype(float)
    masks = rng.random((n, n_targets)) < np.linspace(0.3, 1.0, n_targets)
    masks[:, -1] = True
    return X, Y, masks


def _assert_same(shared, single, rtol):
    """Every fitted attribute agrees, relative to the attribute's largest entry."""
    assert isinstance(shared, PLS)
    assert shared.n_components_ == single.n_components_
    assert shared.n_features_in_ == single.n_features_in_
    assert shared.y_ndim_ == single.y_ndim_ == 1
    for name in FITTED:
        ours, ref = getattr(shared, name), getattr(single, name)
        assert ours.shape == ref.shape, name
        assert ours.dtype == ref.dtype, name
        np.testing.assert_allclose(ours, ref, rtol=0, atol=rtol * np.abs(ref).max(), err_msg=name)


class _CountingReads:
    """An array-like that records every row range read from it (and can pose as a chunked array)."""

    def __init__(self, X, chunks=None):
        self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, []
        if chunks is not None:
            self.chunks = chunks

    def __getitem__(self, rows):
        self.reads.append((rows.start, rows.stop))
        return self.X[rows]


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float64, 1e-8), (np.float32, 5e-5), (np.float16, 5e-5)])
def test_fit_shared_equals_one_fit_per_target_on_its_rows(dtype, rtol):
    X, Y, masks = _layer()
    X = X.astype(dtype)
    Y[~masks] = np.nan  # values outside a target's rows must not matter
    shared = fit_shared(X, Y, masks, n_components=8, block_bytes=3000)
    assert len(shared) == Y.shape[1]
    for a, model in enumerate(shared):
        rows = masks[:, a]
        single = PLS(8).fit(X[rows], Y[rows, a])
        _assert_same(model, single, rtol)
        np.testing.assert_allclose(model.predict(X), single.predict(X), atol=rtol * 10)
        np.testing.assert_allclose(model.transform(X[rows]), model.x_scores_, rtol=0, atol=rtol * 10)


def test_fit_shared_without_masks_uses_all_rows():
    X, Y, _ = _layer(n_targets=3)
    for a, model in enumerate(fit_shared(X, Y, n_components=5)):
        _assert_same(model, PLS(5).fit(X, Y[:, a]), 1e-8)


def test_unfittable_targets_get_their_error_and_the_others_still_fit():
    X, Y, masks = _layer(n=120, n_targets=5)
    X[:20] = 0.0  # a dead image repeated: no covariance with any target on rows 0-19 alone
    # rows 20-49 span two directions only: a target on them runs out of components after 2
    rng = np.random.default_rng(1)
    X[20:50] = rng.normal(size=(30, 2)) @ rng.normal(size=(2, X.shape[1]))
    masks[:, 0] = np.arange(120) < 20  # no covariance
    masks[:, 1] = Y[:, 1] == 1  # constant in its rows
    masks[:, 2] = np.arange(120) < 6  # too few rows for 6 components
    Y[:6, 2] = [0, 1, 0, 1, 0, 1]
    masks[:, 3] = (np.arange(120) >= 20) & (np.arange(120) < 50)  # rank 2
    shared = fit_shared(X, Y, masks, n_components=6)
    for a in range(3):
        rows = masks[:, a]
        assert isinstance(shared[a], ProbeInputError)
        with pytest.raises(ProbeInputError) as single:
            PLS(6).fit(X[rows], Y[rows, a])
        assert str(shared[a]) == str(single.value)
    assert "no variance" in str(shared[0])
    assert "constant" in str(shared[1])
    assert "needs more than 6 samples" in str(shared[2])
    rows = masks[:, 3]
    _assert_same(shared[3], PLS(6).fit(X[rows], Y[rows, 3]), 1e-8)
    assert shared[3].n_components_ == 2
    _assert_same(shared[4], PLS(6).fit(X[masks[:, 4]], Y[masks[:, 4], 4]), 1e-8)
    assert shared[4].n_components_ == 6


def test_nan_target_inside_its_rows_is_its_own_error():
    X, Y, masks = _layer(n_targets=3)
    Y[np.flatnonzero(masks[:, 0])[3], 0] = np.nan
    shared = fit_shared(X, Y, masks, n_components=4)
    assert isinstance(shared[0], ProbeInputError)
    assert "NaN" in str(shared[0])
    for a in (1, 2):
        _assert_same(shared[a], PLS(4).fit(X[masks[:, a]], Y[masks[:, a], a]), 1e-8)


def test_zarr_array_is_read_in_whole_chunks(tmp_path):
    zarr = pytest.importorskip("zarr")
    X, Y, masks = _layer(n=150, m=40, n_targets=4)
    X = X.astype(np.float32)
    store = zarr.create_array(store=tmp_path / "x.zarr", shape=X.shape, chunks=(8, 40), dtype="float32")
    store[:] = X
    counting = _CountingReads(store, chunks=store.chunks)
    shared = fit_shared(counting, Y, masks, n_components=4, block_bytes=40 * 4 * 24)  # 24 rows -> 16
    assert counting.reads
    for start, stop in counting.reads:
        assert start % 8 == 0
        assert stop % 8 == 0 or stop == X.shape[0]
    assert {stop - start for start, stop in counting.reads} == {16, 150 % 16}
    for a, model in enumerate(shared):
        rows = masks[:, a]
        _assert_same(model, PLS(4).fit(X[rows], Y[rows, a]), 5e-5)


class _Streamed:
    """A layer whose rows arrive once per pass, in batches of uneven sizes, as a streamed layer's do."""

    def __init__(self, X, batches=(7, 13, 64)):
        self.X, self.shape, self.dtype, self.batches, self.passes = (
            X,
            X.shape,
            np.dtype(np.float32),
            batches,
            0,
        )

    def stream_rows(self):
        self.passes += 1
        start, i = 0, 0
        while start < len(self.X):
            stop = start + self.batches[i % len(self.batches)]
            yield self.X[start:stop].astype(np.float32)
            start, i = stop, i + 1


def _sources(X):
    """The same float32 matrix held, read from a chunked array of odd chunk rows, in float16 and streamed."""
    return {
        "held": X,
        "chunked": _CountingReads(X, chunks=(30, X.shape[1])),
        "float16": X.astype(np.float16).astype(np.float32).astype(np.float16),
        "streamed": _Streamed(X),
    }


def test_row_blocks_are_the_same_whatever_the_source():
    X = (np.arange(1000, dtype=np.float32) % 97).reshape(100, 10)  # exact in float16 too
    partitions = {}
    for name, source in _sources(X).items():
        blocks = _RowBlocks(source, block_bytes=1)  # 16-row blocks: at least 16 rows, a power of two
        assert (blocks.rows, blocks.chunk_rows) == (16, 16)
        seen = [(rows, block.copy()) for rows, block in blocks]
        for rows, block in seen:
            assert block.dtype == np.float32
            np.testing.assert_array_equal(block, X[rows])
        partitions[name] = [(rows.start, rows.stop) for rows, _ in seen]
    assert all(p == partitions["held"] for p in partitions.values()), partitions
    assert partitions["held"] == [(s, min(s + 16, 100)) for s in range(0, 100, 16)]
    assert _RowBlocks(X, block_bytes=40 * 20).rows == 16  # 20 rows of 40 bytes, down to a power of two


def test_a_layer_fits_to_the_last_bit_the_same_held_read_or_streamed():
    X, Y, masks = _layer(n=300, m=50)
    X = X.astype(np.float32)
    sources = _sources(X)
    del sources["float16"]  # other values
    fits = {
        name: fit_shared(source, Y, masks, n_components=5, block_bytes=50 * 4 * 8)
        for name, source in sources.items()
    }
    assert sources["streamed"].passes == 6  # one pass for the means, one per component
    for name, fitted in fits.items():
        for ours, held in zip(fitted, fits["held"], strict=True):
            for attribute in FITTED:
                np.testing.assert_array_equal(
                    getattr(ours, attribute), getattr(held, attribute), err_msg=name
                )


def test_passes_over_x_do_not_grow_with_the_number_of_targets():
    X, Y, masks = _layer(n=200, n_targets=12)
    heights = {}
    for n_targets in (1, 12):
        counting = _CountingReads(X)
        models = fit_shared(
            counting, Y[:, :n_targets], masks[:, :n_targets], n_components=5, block_bytes=9600
        )
        assert all(model.n_components_ == 5 for model in models)
        assert sum(start == 0 for start, _ in counting.reads) == 6  # one pass for the means, one a component
        assert sum(stop - start for start, stop in counting.reads) == 6 * 200
        heights[n_targets] = counting.reads[0][1]
    # 9600 bytes hold 20 rows of 60 float64 features, 16 as a power of two; 12 targets read at least 4 rows
    # per target at once, 64 as a power of two
    assert heights == {1: 16, 12: 64}


def test_a_tiny_budget_fits_in_groups_with_the_same_results():
    X, Y, masks = _layer(n_targets=3)
    counting = _CountingReads(X)
    grouped = fit_shared(counting, Y, masks, n_components=4, max_bytes=1)
    assert len(counting.reads) == 3 * 5  # one group per target, 5 passes each, one block per pass
    for ours, ref in zip(grouped, fit_shared(X, Y, masks, n_components=4), strict=True):
        _assert_same(ours, ref, 1e-10)


def test_the_budget_counts_target_states_and_an_x_on_disk_takes_no_memory(monkeypatch):
    import faceprobe.pls as pls

    X, Y, masks = _layer(n_targets=6)  # 200 x 60 float64
    per_target = target_state_bytes(200, 60, 3, itemsize=8)
    groups: list[int] = []
    lockstep = pls._fit_lockstep

    def counted(blocks, Y, columns, *args):
        groups.append(len(columns))
        return lockstep(blocks, Y, columns, *args)

    monkeypatch.setattr(pls, "_fit_lockstep", counted)
    fit_shared(X, Y, masks, n_components=3, max_bytes=2 * per_target)
    assert groups == [2, 2, 2]
    # By default: at least the floor, or half of an X held in RAM (48,000 bytes: 2 targets' states here);
    # read from disk, X takes no memory, so the floor alone (here one target's state).
    monkeypatch.setattr(pls, "MIN_STATE_BYTES", per_target)
    groups.clear()
    fit_shared(X, Y, masks, n_components=3)
    assert groups == [2, 2, 2]
    groups.clear()
    fit_shared(_CountingReads(X), Y, masks, n_components=3)
    assert groups == [1] * 6


def test_transform_shared_equals_each_transform():
    X, Y, masks = _layer(n_targets=4)
    X = X.astype(np.float32)
    masks[:, 1] = np.arange(len(X)) < 5  # too few rows: a failed target is simply left out
    models = [m for m in fit_shared(X, Y, masks, n_components=5) if isinstance(m, PLS)]
    assert len(models) == 3
    new = np.random.default_rng(5).normal(size=(33, X.shape[1])).astype(np.float32)
    projected = transform_shared(new, models, block_bytes=1000)
    assert [p.shape for p in projected] == [(33, 5)] * 3
    for model, ours in zip(models, projected, strict=True):
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, model.transform(new), rtol=1e-5, atol=1e-5)
    assert transform_shared(new, []) == []
    with pytest.raises(ProbeInputError, match="fitted on 60"):
        transform_shared(new[:, :10], models)


def test_non_finite_x_raises_even_outside_every_mask():
    X, Y, masks = _layer(n_targets=2)
    masks[5] = False
    X[5, 17] = np.inf
    with pytest.raises(ProbeInputError, match=r"NaN or inf.*feature 17"):
        fit_shared(X.astype(np.float32), Y, masks, n_components=3)


def test_bad_shapes_are_refused():
    X, Y, masks = _layer(n_targets=2)
    with pytest.raises(ProbeInputError, match="one column per target"):
        fit_shared(X, Y[:, 0])
    with pytest.raises(ProbeInputError, match="boolean array shaped like Y"):
        fit_shared(X, Y, masks.astype(int))
    with pytest.raises(ProbeInputError, match="boolean array shaped like Y"):
        fit_shared(X, Y, masks[:, :1])
    with pytest.raises(ProbeInputError, match="positive integer"):
        fit_shared(X, Y, masks, n_components=0)
    assert fit_shared(X, Y[:, :0]) == []


def test_a_pass_skips_the_blocks_no_target_fits_on_or_scores(monkeypatch):
    import faceprobe.pls as pls

    # Three targets on disjoint row ranges and 64 rows no target fits on: a pass reads only the blocks
    # a target fits on, and those holding rows whose transform is asked for.
    X, Y, _ = _layer(n=256, m=40, n_targets=3)
    masks = np.zeros((256, 3), dtype=bool)
    for a in range(3):
        masks[64 * a : 64 * (a + 1), a] = True
    read: list[int] = []
    accumulate = pls._accumulate_vtx

    def counted(blocks, k, weights, support=None):
        def spy(rows, block):
            read.append(rows.start)
            return weights(rows, block)

        return accumulate(blocks, k, spy, support)

    monkeypatch.setattr(pls, "_accumulate_vtx", counted)
    shared = fit_shared(X, Y, masks, n_components=3, block_bytes=40 * 8 * 16)  # 16-row blocks
    assert sorted(set(read)) == list(range(0, 192, 16))
    assert len(read) == 4 * 12  # the means' pass and one per component, 12 blocks each
    for a, model in enumerate(shared):
        rows = masks[:, a]
        _assert_same(model, PLS(3).fit(X[rows], Y[rows, a]), 1e-8)
    read.clear()
    scored = np.zeros_like(masks)
    scored[200, 1] = True
    fit_transform_shared(X, Y, masks, 3, scored=scored, block_bytes=40 * 8 * 16)
    assert len(read) == 12 + 3 * 13  # the components' passes also read the block of row 200


def test_fit_transform_shared_scores_rows_as_transform_does():
    X, Y, masks = _layer(n=240, n_targets=4)
    X = X.astype(np.float32)
    masks[:, 1] = np.arange(len(X)) < 5  # too few rows: its slot holds the error, no scores
    rng = np.random.default_rng(3)
    scored = rng.random(masks.shape) < 0.3
    scored[:, 2] = False
    for max_bytes in (None, 1):  # one group, and one group per target
        fits = fit_transform_shared(X, Y, masks, 5, scored=scored, block_bytes=3000, max_bytes=max_bytes)
        assert isinstance(fits[1], ProbeInputError)
        for a in (0, 2, 3):
            fit = fits[a]
            assert isinstance(fit, SharedFit)
            _assert_same(fit.model, fit_shared(X, Y, masks, 5)[a], 5e-5)
            np.testing.assert_array_equal(fit.rows, np.flatnonzero(scored[:, a]))
            assert fit.scores.dtype == np.float32
            assert fit.scores.shape == (len(fit.rows), fit.model.n_components_)
            reference = fit.model.transform(X[fit.rows])
            scale = np.abs(reference).max(initial=1)
            np.testing.assert_allclose(fit.scores, reference, rtol=0, atol=2e-6 * scale)
    with pytest.raises(ProbeInputError, match="scored must be a boolean array"):
        fit_transform_shared(X, Y, masks, 5, scored=scored[:, :2])
