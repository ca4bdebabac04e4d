"""Passes over X run their products with one BLAS thread, split between faceprobe's own threads.

Multithreaded BLAS products on row blocks this small collapse when another process holds a core; these
tests fail if a pass runs its products with more than one BLAS thread, if the limit outlives the fit, or
if the result depends on how many threads shared the pass.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from faceprobe import pls
from faceprobe.pls import PLS, fit_shared, transform_shared

CPUS = pls.usable_cpus()


def _blas_threads() -> int:
    """What threadpoolctl itself reads from the loaded BLAS libraries (not faceprobe's bookkeeping)."""
    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=0)


@pytest.fixture
def blocks_seen(monkeypatch):
    """Records, for every block a pass reads, the reading thread and BLAS's thread limit at that moment."""
    seen: list[tuple[int, int]] = []
    original = pls._RowBlocks.reader

    def reader(self):
        read = original(self)

        def spy(span):
            for rows, block in read(span):
                seen.append((threading.get_ident(), _blas_threads()))
                yield rows, block

        return spy

    monkeypatch.setattr(pls._RowBlocks, "reader", reader)
    return seen


@pytest.fixture
def two_blas_threads():
    with threadpool_limits(2, user_api="blas"):
        if _blas_threads() != 2:
            pytest.skip("no BLAS that threadpoolctl can set to 2 threads")
        yield


def _data(n=512, m=8192):
    """16 MiB of float32: above the size where passes are split, four 4 MiB blocks."""
    rng = np.random.default_rng(0)
    X = rng.random((n, m), dtype=np.float32)
    y = (X[:, :32].sum(axis=1) > 16).astype(np.float64)
    return X, y


def test_fit_and_transform_products_run_with_one_blas_thread(blocks_seen, two_blas_threads):
    X, y = _data()
    model = PLS(4).fit(X, y)
    fit_reads = len(blocks_seen)
    transform_shared(X, [model])
    assert fit_reads == 5 * 4 and len(blocks_seen) == 6 * 4  # 5 passes of 4 blocks, then one more
    assert {limit for _, limit in blocks_seen} == {1}
    assert _blas_threads() == 2  # restored after the fit


@pytest.mark.skipif(CPUS < 2, reason="one CPU: passes run in the calling thread")
def test_a_pass_is_split_between_threads_as_many_as_blas_allows(monkeypatch, two_blas_threads):
    X, y = _data()
    main, helped, waited = threading.get_ident(), threading.Event(), threading.Event()
    readers: list[int] = []  # each thread of a pass takes one reader for the pass
    original = pls._RowBlocks.reader

    def reader(self):
        read = original(self)
        readers.append(threading.get_ident())

        def spy(span):
            for rows, block in read(span):
                if threading.get_ident() != main:
                    helped.set()
                elif split and not waited.is_set():  # hold the first block until another thread reads
                    waited.set()  # one: on a busy machine this thread could take every chunk itself
                    helped.wait(timeout=10)
                yield rows, block

        return spy

    monkeypatch.setattr(pls._RowBlocks, "reader", reader)
    split = True
    fit_shared(X, np.column_stack([y, 1 - y]), n_components=2)
    passes = readers.count(main)
    assert passes == 3  # the means, then one per component
    assert helped.is_set() and len(readers) == 2 * passes  # one more thread in each pass
    readers.clear()
    split = False
    with threadpool_limits(1, user_api="blas"):  # a caller's limit of one thread: one thread per pass
        PLS(2).fit(X, y)
    assert set(readers) == {main}


def test_results_do_not_depend_on_the_threads_of_a_pass(monkeypatch, two_blas_threads):
    X, y = _data()
    split = PLS(4).fit(X, y)
    with threadpool_limits(1, user_api="blas"):
        single = PLS(4).fit(X, y)
    monkeypatch.setenv(pls._PASSES_ENV, "blas")  # the old passes: one thread, BLAS's threads per product
    old = PLS(4).fit(X, y)
    for name in ("x_weights_", "x_loadings_", "x_scores_", "x_rotations_", "vip_"):
        np.testing.assert_array_equal(getattr(split, name), getattr(single, name), err_msg=name)
        # the kernels' own threads add in an order of their own: equal up to float32 rounding, which the
        # later components' small weights amplify (relative to the largest value, not to each one)
        reference = getattr(old, name)
        scale = 1e-4 * np.abs(reference).max()
        np.testing.assert_allclose(getattr(split, name), reference, rtol=1e-5, atol=scale, err_msg=name)
    np.testing.assert_array_equal(split.transform(X), single.transform(X))


class _FailingRead:
    """A float16 array-like whose reads fail from row ``bad`` on."""

    def __init__(self, X, bad):
        self.X, self.shape, self.dtype, self.bad = X, X.shape, X.dtype, bad

    def __getitem__(self, rows):
        if rows.stop > self.bad:
            raise OSError("disk gone")
        return self.X[rows]


def test_a_failed_read_in_any_thread_raises_and_releases_the_limit(two_blas_threads):
    X, y = _data(m=16384)
    with pytest.raises(OSError, match="disk gone"):
        PLS(2).fit(_FailingRead(X.astype(np.float16), bad=400), y)
    assert _blas_threads() == 2


def test_overlapping_fits_leave_blas_as_they_found_it(two_blas_threads):
    X, y = _data()
    fits = [threading.Thread(target=PLS(3).fit, args=(X, y)) for _ in range(3)]
    for fit in fits:
        fit.start()
    for fit in fits:
        fit.join()
    assert _blas_threads() == 2


def test_a_layers_unit_fits_keep_blas_at_one_thread_from_first_to_last(monkeypatch, two_blas_threads):
    """The many small fits of a layer's unit probes, on threads of their own, hold BLAS at one thread
    throughout: BLAS gets its threads back once they are all done, never between two of them (OpenBLAS's
    threads, woken by a product between fits, spin on the cores the next fits need)."""
    from faceprobe.studies.layerwise import AttributeRows, fit_layer

    restored: list[int] = []
    original = pls._BlasThreads.one_thread

    def counting(self):
        manager = original(self)

        class Counted:
            def __enter__(self):
                return manager.__enter__()

            def __exit__(self, *exc):
                out = manager.__exit__(*exc)
                if _blas_threads() == 2:
                    restored.append(1)
                return out

        return Counted()

    monkeypatch.setattr(pls._BlasThreads, "one_thread", counting)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 8 * 6 * 6), dtype=np.float32)
    rows = {}
    for a in range(4):
        y = rng.integers(0, 2, 96)
        rows[str(a)] = AttributeRows(np.arange(64), np.arange(64, 96), y[:64], y[64:])
    fit_layer(X, (8, 6, 6), rows, k=4, n_components=3, single_units=True)
    # each attribute fits a top-4 channel probe and 4 single-channel ones (20 small fits); BLAS got its
    # threads back after the layer's PLS, after the unit fits, and after the readouts' pass at most
    assert 1 <= len(restored) <= 3, len(restored)


@pytest.fixture
def two_torch_threads():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_same_x_gives_the_same_fit_to_the_last_bit_every_time(two_torch_threads):
    """A product split between torch's threads sums in an order that changes from run to run; each
    product of a pass runs on one thread, so the same rows, held anywhere, give the same fit every time."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3000), dtype=np.float32)
    y = (X[:, :10].sum(axis=1) > 0).astype(float)
    first = PLS(4).fit(X, y)
    for again in (X, X, X.copy()):
        fitted = PLS(4).fit(again, y)
        np.testing.assert_array_equal(fitted.x_scores_, first.x_scores_)
        np.testing.assert_array_equal(fitted.vip_, first.vip_)


@pytest.mark.skipif(CPUS < 2, reason="one CPU: passes run in the calling thread")
def test_threads_reading_blocks_of_different_targets_use_their_own_weights(two_blas_threads):
    """Each 128-row block serves one target: the threads of a pass read blocks of different targets at
    the same time (a pick of weight rows shared between threads once gave one thread the other's
    weights). The split fit equals the fit in one thread."""
    X, _ = _data()
    rng = np.random.default_rng(1)
    Y = rng.integers(0, 2, (len(X), 4)).astype(float)
    masks = np.zeros((len(X), 4), dtype=bool)
    for target in range(4):
        masks[target * 128 : (target + 1) * 128, target] = True
    with threadpool_limits(1, user_api="blas"):
        single = fit_shared(X, Y, masks, n_components=3)
    for _ in range(5):
        split = fit_shared(X, Y, masks, n_components=3)
        for ours, reference in zip(split, single, strict=True):
            np.testing.assert_array_equal(ours.x_scores_, reference.x_scores_)
            np.testing.assert_array_equal(ours.vip_, reference.vip_)


@pytest.mark.skipif(CPUS < 2, reason="one CPU: the updates run in the calling thread")
def test_the_per_target_updates_between_passes_share_threads_and_not_results(monkeypatch, two_blas_threads):
    """Between passes each target's weights and deflation run on threads of their own; the fit equals
    the fit whose updates run one after another in one thread, to the last bit."""
    X, _ = _data()
    rng = np.random.default_rng(2)
    Y = rng.integers(0, 2, (len(X), 6)).astype(float)
    masks = rng.random((len(X), 6)) < 0.6
    with threadpool_limits(1, user_api="blas"):
        single = fit_shared(X, Y, masks, n_components=4)
    monkeypatch.setattr(pls, "_MIN_SHARED_UPDATE", 1)  # share even this small X's updates
    updaters: set[int] = set()
    deflate = pls._deflate

    def spy(*args):
        updaters.add(threading.get_ident())
        return deflate(*args)

    monkeypatch.setattr(pls, "_deflate", spy)
    split = fit_shared(X, Y, masks, n_components=4)
    assert updaters and threading.get_ident() not in updaters  # on the pool's threads
    for ours, reference in zip(split, single, strict=True):
        for name in ("x_weights_", "x_loadings_", "x_scores_", "x_rotations_", "vip_"):
            np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name), err_msg=name)
