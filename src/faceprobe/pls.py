"""Partial least squares (NIPALS) and VIP scores for very wide float32 matrices.

A probed layer is an n x m matrix with m up to millions of neurons, so the usual implementations fail on it:
scikit-learn copies X to float64 and deflates it in place (two extra copies of a matrix that may already fill
the memory). :class:`PLS` never changes X. It centres implicitly and deflates through the scores and loadings
found so far, so X is only ever read, one row block at a time:

* ``M = X'Yc`` (one pass; the same pass yields the column means);
* per component ``a``: ``w`` is the dominant left singular vector of the deflated cross-product ``M`` (for one
  target simply ``M / ||M||``, which is exactly what NIPALS' inner loop converges to; for several targets an
  eigensolve of the tiny ``M'M`` replaces the power iteration);
* one pass computes, block by block, the scores ``t = (X - mean) w - T_prev (P_prev' w)`` and accumulates the
  loadings ``p = ((X - mean)' t - P_prev (T_prev' t)) / t't``;
* the deflated cross-product needs no pass: ``M_{a+1} = M_a - p (t' Y_a)``.

So ``n_components`` components cost ``n_components + 1`` passes over X and no copy of it. Arithmetic runs in
X's precision when X is float32 or float64 (any other dtype, e.g. float16, is converted block by block to
float32); the small per-component quantities are kept in float64. The products with X's blocks run where the
blocks are, by torch's kernels: on the host's arrays (:class:`_HostMath`), or, for a streamed layer whose
rows stay on the network's device as torch tensors, in float32 on that device (:class:`_TorchMath`).

:func:`fit_shared` runs many such fits in lockstep, one per target column, each on its own subset of the rows
(a row mask): every pass multiplies a block by the weights of all targets at once and accumulates all their
loadings at once, so fitting A targets costs the same ``n_components + 1`` passes as fitting one. Rows outside
a target's mask get score zero, which removes them from its sums; its column means come from the first pass as
mask-weighted sums. :func:`fit_transform_shared` also returns each model's scores of other rows of X, from
the products ``X w`` its passes compute anyway; :func:`transform_shared` projects X on many fitted models in
one pass.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from faceprobe.errors import ProbeInputError

__all__ = [
    "MIN_STATE_BYTES",
    "PLS",
    "SharedFit",
    "channel_vip",
    "fit_shared",
    "fit_transform_shared",
    "target_state_bytes",
    "top_k_channels",
    "top_k_neurons",
    "transform_shared",
    "vip_scores",
]

#: The least working memory :func:`fit_shared` gives its targets' state (its default, unless X is held in
#: RAM and larger); a run's plan gives its fits no less either.
MIN_STATE_BYTES = 2**30
_DEFAULT_BLOCK_BYTES = 4 * 2**20  # measured fastest here: a block stays in cache for its two products
_MIN_BLOCK_ROWS = 16  # fewer rows per product run far below memory bandwidth on wide layers
_MIN_SPLIT_BYTES = 8 * 2**20  # passes over less X run in the calling thread: threads would cost more
_COPY_BYTES = 64 * 2**20  # a column-ordered X up to this size is copied in row order before its passes
_MIN_SHARED_UPDATE = 2**20  # features x targets below which a fit's per-target updates run in one thread
_CHUNK_BLOCKS = 8  # blocks a pass's thread takes at a time; its sums join the total once per chunk
_CANCELLED = 64  # scores within this many float epsilons of the products they came from are rounding
_MAX_WORKERS = 8  # threads of a pass, each holding a k x m sum; the passes are bound by memory
_PASSES_ENV = "FACEPROBE_PLS_PASSES"  # "blas": passes in one thread, products on their kernels' threads


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


class _RowBlocks:
    """Reads a 2-D array-like (ndarray, memmap, zarr array, stored or streamed layer) in row blocks of the
    compute dtype.

    The blocks, and the chunks a pass is split into, depend only on the matrix's size and the block size
    asked for, never on where the rows come from: sums of products over blocks are then added in the same
    order, so a layer held in RAM, read from the store or streamed through the network gives the same fit
    to the last bit. Blocks are a power of two of rows (about ``block_bytes``, at least ``min_rows``:
    products with many columns run far below speed on fewer rows), small enough to stay in cache for the
    two products of a pass; a chunk is a power of two of blocks.

    A block of an ndarray already in the compute dtype is a view. Anything else is read in larger pieces
    (whole blocks, at least a chunk row of a chunked array such as zarr) into one reused buffer, and each
    block of a piece is converted into another reused buffer when its dtype is not the compute dtype; fresh
    buffers per read would be first-touched memory every time. A block is therefore only valid until the
    next one is read. An array with a ``read_rows(rows, out)`` method (a layer of the activation store)
    fills the read buffer itself; one with a ``stream_rows()`` method (a layer streamed through the network,
    :mod:`faceprobe.extract.lockstep`) yields every row once per pass, in order, in batches of any size.

    A pass is split into chunks that the pass's threads take in turn (a streamed layer's in one thread, in
    order); each thread reads its chunks through its own :meth:`reader`, so the buffers above are per thread.

    ``math`` runs the products of a pass with the blocks: on host arrays (:class:`_HostMath`), or on the
    device a streamed layer's rows stay on (its ``rows_device``), see :class:`_TorchMath`.
    """

    def __init__(self, X: Any, block_bytes: int, min_rows: int = _MIN_BLOCK_ROWS) -> None:
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        if isinstance(X, np.ndarray) and not X.flags.c_contiguous and X.nbytes <= _COPY_BYTES:
            X = np.ascontiguousarray(X)  # a small column-ordered X: copied once, its rows then read in place
        if len(X.shape) != 2:
            raise ProbeInputError(f"X must be 2-D (samples x features); got shape {tuple(X.shape)}")
        self.X = X
        self.n, self.m = (int(s) for s in X.shape)
        self.dtype = _compute_dtype(np.dtype(X.dtype))
        self.streamed = hasattr(X, "stream_rows")
        self.math = _pass_math(X, self.dtype)
        fitting = block_bytes // max(1, self.m * self.dtype.itemsize)
        self.rows = max(1, min(self.n, max(_power_of_two(min_rows, up=True), _power_of_two(fitting))))
        # Chunks small enough that every thread gets several, and the same whatever the number of threads,
        # so that the sums, added chunk by chunk in row order, are too.
        blocks = -(-self.n // self.rows)
        self.chunk_rows = self.rows * _power_of_two(min(_CHUNK_BLOCKS, max(1, blocks // (2 * _MAX_WORKERS))))
        chunks = getattr(X, "chunks", None)
        height = int(chunks[0]) if chunks and isinstance(chunks[0], (int, np.integer)) else self.rows
        self.piece_rows = min(self.chunk_rows, self.rows * -(-height // self.rows))

    def __iter__(self) -> Iterator[tuple[slice, Any]]:
        return self.reader()(slice(0, self.n))

    def chunks(self) -> list[slice]:
        return [slice(s, min(s + self.chunk_rows, self.n)) for s in range(0, self.n, self.chunk_rows)]

    def holding(self, rows: NDArray[np.intp]) -> Iterator[tuple[slice, Any]]:
        """The blocks of the pieces (the reads of X) that hold any of ``rows``, in order: X is read there
        only, in runs of consecutive pieces; a streamed X whole, since every row passes anyway."""
        if self.streamed:
            yield from self
            return
        read = self.reader()
        pieces = np.unique(np.asarray(rows, dtype=np.intp) // self.piece_rows)
        for run in np.split(pieces, np.flatnonzero(np.diff(pieces) > 1) + 1):
            if len(run):
                yield from read(
                    slice(int(run[0]) * self.piece_rows, min(self.n, (int(run[-1]) + 1) * self.piece_rows))
                )

    def reader(self) -> Callable[[slice], Iterator[tuple[slice, Any]]]:
        """The blocks of a chunk, read into buffers of this reader's own: ndarrays, or tensors on a
        streamed layer's ``rows_device``."""
        X, stored = self.X, np.dtype(self.X.dtype)
        # Rows of a C-ordered ndarray are read where they are; those of a large column-ordered one are
        # copied a block at a time: its strided blocks multiply several times slower.
        # Torch's products take writable memory only: a read-only array (a memory map) is copied too.
        in_place = isinstance(X, np.ndarray) and X.flags.c_contiguous and X.flags.writeable
        if in_place and stored == self.dtype:

            def views(span: slice) -> Iterator[tuple[slice, NDArray]]:
                for start in range(span.start, span.stop, self.rows):
                    rows = slice(start, min(start + self.rows, span.stop))
                    yield rows, X[rows]

            return views
        if self.streamed:
            return self._stream_reader()
        read_rows = getattr(X, "read_rows", None)
        raw = np.empty((self.piece_rows, self.m), stored) if read_rows is not None else None
        converted: NDArray | None = None  # made when a block first needs it

        def pieces(span: slice) -> Iterator[tuple[slice, NDArray]]:
            nonlocal converted
            for start in range(span.start, span.stop, self.piece_rows):
                rows = slice(start, min(start + self.piece_rows, span.stop))
                piece = np.asarray(X[rows]) if raw is None else read_rows(rows, raw[: rows.stop - start])
                for offset in range(0, len(piece), self.rows):
                    block = piece[offset : offset + self.rows]
                    # Blocks read or mapped in the compute dtype are multiplied where they are; the others
                    # (another dtype, strided: column-ordered X, or read-only) are converted into a buffer.
                    if block.dtype != self.dtype or not (block.flags.c_contiguous and block.flags.writeable):
                        if converted is None:
                            converted = np.empty((self.rows, self.m), self.dtype)
                        block = _convert(block, converted[: len(block)])
                    yield slice(start + offset, start + offset + len(block)), block

        return pieces

    def _stream_reader(self) -> Callable[[slice], Iterator[tuple[slice, Any]]]:
        """Blocks cut from the batches of one pass of a streamed layer (started by the first block asked
        for): a block inside a batch is a view of it, one across batches is copied together."""
        math = self.math
        batches: Iterator[Any] | None = None
        batch = math.empty(0, self.m)
        at = 0  # rows of ``batch`` already handed out
        joined = math.empty(self.rows, self.m)

        def take(count: int) -> Any:
            nonlocal batches, batch, at
            if batches is None:
                batches = iter(self.X.stream_rows())
            if at == len(batch):
                batch, at = math.batch(next(batches)), 0
            if len(batch) - at >= count:
                at += count
                return batch[at - count : at]
            filled = 0
            while filled < count:
                if at == len(batch):
                    batch, at = math.batch(next(batches)), 0
                part = min(count - filled, len(batch) - at)
                joined[filled : filled + part] = batch[at : at + part]
                filled, at = filled + part, at + part
            return joined[:count]

        def blocks(span: slice) -> Iterator[tuple[slice, Any]]:
            for start in range(span.start, span.stop, self.rows):
                rows = slice(start, min(start + self.rows, span.stop))
                yield rows, take(rows.stop - rows.start)

        return blocks


class _TorchMath:
    """The products of a pass with torch blocks, on their device (a streamed layer whose rows stay where
    the network computed them): only the sums a pass returns and the scores (rows x targets) reach the
    host, so on a GPU no activation leaves it. Arithmetic is float32 there; the blocks are cut as on the
    host and the sums added in the same order.

    Sums accumulate in place (``addmm``): a product into a buffer added after would write and read a
    k x m temporary per block, as much traffic as the block itself on wide layers. Each product runs on
    one of torch's threads (:meth:`_one_thread`).
    """

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    @contextmanager
    def _one_thread(self) -> Iterator[None]:
        """Torch's CPU kernels on one thread for one product, then as many as before (torch keeps the count
        per thread; setting it costs a tenth of a microsecond). A pass's threads split its rows already:
        products that split themselves again would spin-wait for cores the other threads, or another
        process, hold (as BLAS's did, see :class:`_BlasThreads`), and on two threads they sum in an order
        that changes from run to run, where a pass must give the same sums every time."""
        if _legacy_passes():
            yield
            return
        before = self.torch.get_num_threads()
        self.torch.set_num_threads(1)
        try:
            yield
        finally:
            self.torch.set_num_threads(before)

    def zeros(self, rows: int, columns: int) -> Any:
        return self.torch.zeros((rows, columns), dtype=self.torch.float32, device=self.device)

    def empty(self, rows: int, columns: int) -> Any:
        return self.torch.empty((rows, columns), dtype=self.torch.float32, device=self.device)

    def batch(self, rows: Any) -> Any:
        """A streamed batch as a block."""
        return self.torch.as_tensor(rows, dtype=self.torch.float32, device=self.device)

    def operand(self, a: NDArray) -> Any:
        """A host array (weights, columns) as the products with blocks take it."""
        return self.torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def host(self, a: Any) -> NDArray:
        return a.cpu().numpy()

    def tensor(self, block: Any) -> Any:
        """The block (or a buffer of this math's) as a torch tensor, for code that computes in torch."""
        return block

    def add_vt(self, total: Any, V: NDArray, block: Any) -> None:
        """``total += V' block`` for the block's rows of V (rows x k, on the host)."""
        Vt, block, total = self.operand(V).T, self.tensor(block), self.tensor(total)
        with self._one_thread():
            self.torch.addmm(total, Vt, block, out=total)

    def block_times(self, block: Any, B: Any, out: NDArray | None = None) -> NDArray:
        """``block @ B`` (B from :meth:`operand`) on the host, into ``out`` when given."""
        with self._one_thread():
            product = self.tensor(block) @ B
        if out is None:
            return self.host(product)
        self.torch.from_numpy(out).copy_(product)
        return out

    def take(self, block: Any, columns: Any, out: NDArray) -> None:
        """``out = block[:, columns]`` on the host (columns from :meth:`operand`)."""
        with self._one_thread():
            picked = self.tensor(block).index_select(1, columns)  # block[:, columns] is far slower
        self.torch.from_numpy(out).copy_(picked)


class _HostMath(_TorchMath):
    """The products of a pass with NumPy blocks (in RAM, read from the store, or streamed to the host),
    in the blocks' own dtype, into host buffers: torch's CPU kernels on the arrays' memory. For the shapes
    of a pass (a few dozen rows against k x m weights or sums) they ran about twice as fast here as
    NumPy's BLAS (docs/benchmarks.md)."""

    def __init__(self, dtype: np.dtype) -> None:
        super().__init__("cpu")
        self.dtype = dtype

    def zeros(self, rows: int, columns: int) -> NDArray:
        return np.zeros((rows, columns), self.dtype)

    def empty(self, rows: int, columns: int) -> NDArray:
        return np.empty((rows, columns), self.dtype)

    def batch(self, rows: Any) -> NDArray:
        return np.asarray(rows, dtype=self.dtype)

    def operand(self, a: NDArray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a))

    def host(self, a: NDArray) -> NDArray:
        return a

    def tensor(self, block: Any) -> Any:
        return self.torch.from_numpy(block) if isinstance(block, np.ndarray) else block

    def block_times(self, block: Any, B: Any, out: NDArray | None = None) -> NDArray:
        with self._one_thread():
            if out is None:
                return (self.tensor(block) @ B).numpy()
            self.torch.mm(self.tensor(block), B, out=self.torch.from_numpy(out))
        return out


def _pass_math(X: Any, dtype: np.dtype) -> _HostMath | _TorchMath:
    """Torch's products on the device of a streamed layer whose rows are tensors there (its
    ``rows_device``), on host arrays for every other matrix."""
    device = getattr(X, "rows_device", None)
    return _HostMath(dtype) if device is None else _TorchMath(device)


def _power_of_two(n: int, up: bool = False) -> int:
    """The power of two nearest ``n`` from below (from above with ``up``); 1 for n <= 1."""
    if n <= 1:
        return 1
    below = 1 << (int(n).bit_length() - 1)
    return below * 2 if up and below < n else below


def _convert(block: NDArray, out: NDArray) -> NDArray:
    """``block`` converted into ``out``: by torch when it is loaded (SIMD and threaded; NumPy converts
    float16 one value at a time, which took longer than the products of a pass), else by NumPy."""
    torch = sys.modules.get("torch")
    if torch is None or not block.flags.c_contiguous or not block.flags.writeable:  # torch wants writable
        np.copyto(out, block)
    else:
        torch.from_numpy(out).copy_(torch.from_numpy(block))
    return out


class _BlasThreads:
    """The BLAS library's thread count, and a limit of one thread held while any pass runs.

    A pass splits its rows between threads of its own (:func:`_each_chunk`) instead of letting BLAS split
    each product: the blocks are small, and a multithreaded product that small makes its threads spin-wait
    for each other, which turns into a collapse when another process holds one of the cores. The limit is
    process-wide (OpenBLAS has one thread pool), so overlapping fits share it: the first one in sets it,
    the last one out restores what was set before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._controller: ThreadpoolController | None = None
        self._limiter: Any = None
        self._users = 0
        self._outside = 1

    def _blas(self) -> ThreadpoolController:
        if self._controller is None:  # once: finding the libraries walks every loaded one
            self._controller = ThreadpoolController().select(user_api="blas")
        return self._controller

    def _current(self) -> int:
        return max((lib.num_threads for lib in self._blas().lib_controllers), default=1)

    def threads(self) -> int:
        """The threads BLAS is allowed outside the passes (OPENBLAS_NUM_THREADS, a caller's limit, ...)."""
        with self._lock:
            return self._outside if self._users else self._current()

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        if _legacy_passes():
            yield
            return
        with self._lock:
            if not self._users:
                self._outside = self._current()
                self._limiter = self._blas().limit(limits=1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_BLAS = _BlasThreads()


def _legacy_passes() -> bool:
    """Whether passes run as before the split (one thread, the kernels' own threads per product), to
    compare."""
    return os.environ.get(_PASSES_ENV) == "blas"


def one_blas_thread() -> AbstractContextManager[None]:
    """BLAS limited to one thread for as long as the block runs, the passes of the fits inside it still
    split between threads of their own (as many as BLAS was allowed before).

    Hold it around many fits run on threads of one's own: between two fits BLAS would get its threads
    back, and OpenBLAS's threads, once woken by a product outside a fit, spin on the cores that the other
    fits' passes need."""
    return _BLAS.one_thread()


def _with_one_blas_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with _BLAS.one_thread():
            return func(*args, **kwargs)

    return limited


def _pass_threads(blocks: _RowBlocks, n_chunks: int | None = None) -> int:
    """Threads for a pass: as many as BLAS may use (so its thread settings still apply), within the CPUs
    this process may run on and the chunks; one for a small X, where starting threads costs more, and one
    for a streamed X, whose rows arrive once, in order."""
    if _legacy_passes() or blocks.streamed or blocks.n * blocks.m * blocks.dtype.itemsize < _MIN_SPLIT_BYTES:
        return 1
    return max(1, min(_BLAS.threads(), usable_cpus(), n_chunks or _MAX_WORKERS, _MAX_WORKERS))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one), for sizing thread pools."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _each_chunk(
    blocks: _RowBlocks,
    worker: Callable[[], Callable[[slice], Any]],
    merge: Callable[[Any], Any] | None = None,
) -> None:
    """Runs one pass: ``worker()`` gives each thread its function of a chunk, called on every chunk once;
    ``merge`` gets each chunk's result in chunk order, so sums do not depend on the threads or their timing.

    Threads take the next chunk when they finish one, so a thread slowed by another process on its core
    does less of the pass instead of holding up every product. This thread is one of them.
    """
    chunks = blocks.chunks()
    n_threads = _pass_threads(blocks, len(chunks))
    if n_threads == 1:
        run = worker()
        for chunk in chunks:
            result = run(chunk)
            if merge is not None:
                merge(result)
        return
    claim, turn = threading.Lock(), threading.Condition()
    taken, merged, failed = 0, 0, []
    errors = np.geterr()  # new threads start with NumPy's default error handling

    def loop() -> None:
        nonlocal taken, merged
        try:
            with np.errstate(**errors):
                run = worker()
                while not failed:
                    with claim:
                        i, taken = taken, taken + 1
                    if i >= len(chunks):
                        return
                    result = run(chunks[i])
                    if merge is None:
                        continue
                    with turn:
                        while merged != i and not failed:
                            turn.wait()
                    if failed:
                        return
                    merge(result)
                    with turn:
                        merged += 1
                        turn.notify_all()
        except BaseException as error:
            with turn:
                failed.append(error)
                turn.notify_all()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n_threads - 1)]
    for thread in threads:
        thread.start()
    loop()
    for thread in threads:
        thread.join()
    if failed:
        raise failed[0]


class PLS(TransformerMixin, BaseEstimator):
    """PLS regression by NIPALS (PLS1 for one target, PLS2 for several), built for huge float32 X.

    Results match scikit-learn's ``PLSRegression(scale=False)`` (up to the sign of each component) while X is
    never copied, centred, deflated or converted to float64; see the module docstring for the algorithm.

    Parameters
    ----------
    n_components : int
        Number of latent components. Must not exceed ``min(n_samples - 1, n_features)``. Fewer are kept when
        X stops carrying covariance with y earlier (``n_components_`` says how many).
    block_bytes : int
        Size of the row blocks X is read in. Blocks of an in-memory float32/float64 X are views; other inputs
        (float16, memory maps, zarr arrays) are converted block by block, so this bounds the extra memory.

    Attributes
    ----------
    x_mean_ : (n_features,)  column means of X, in the compute dtype
    y_mean_ : (n_targets,)
    x_weights_, x_loadings_, x_rotations_ : (n_features, n_components_)
    x_scores_ : (n_samples, n_components_)  the training scores, equal to ``transform(X)``
    y_loadings_ : (n_targets, n_components_)
    vip_ : (n_features,)  VIP scores (see :func:`vip_scores`)
    n_components_ : int
    """

    def __init__(self, n_components: int = 8, *, block_bytes: int = _DEFAULT_BLOCK_BYTES) -> None:
        self.n_components = n_components
        self.block_bytes = block_bytes

    def fit(self, X: ArrayLike, y: ArrayLike) -> PLS:
        """Fit the components of X that covary most with y, reading X ``n_components + 1`` times.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            Any 2-D array: ndarray, memory map, zarr array, or an object with ``shape``, ``dtype`` and row
            slicing. Never copied, centred or converted as a whole (so a layer larger than the RAM left after
            it is fine): float32 and float64 are computed in their own precision, other dtypes block by block
            in float32.
        y : array-like (n_samples,) or (n_samples, n_targets)
            The target(s), e.g. 0/1 attribute labels; several columns fit PLS2.

        Returns
        -------
        self, with ``x_weights_``, ``x_scores_`` (the training scores, no extra pass), ``x_rotations_``,
        ``vip_`` and the other attributes listed on the class. ``n_components_`` may be smaller than
        ``n_components`` when X carries no covariance with y beyond that.

        Raises
        ------
        ProbeInputError
            X is not 2-D or has NaN/inf values, y has the wrong number of rows, is constant or not finite,
            or ``n_components`` exceeds ``min(n_samples - 1, n_features)``: problems of the input, each one
            line, which callers report instead of a probe accuracy.
        """
        blocks = _RowBlocks(X, self.block_bytes)
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != blocks.n:
            raise ProbeInputError(
                f"y must have one row per sample of X ({blocks.n}); got shape {np.shape(y)}"
            )
        (result,) = _fit_lockstep(blocks, Y, [slice(None)], None, [self])
        if isinstance(result, ProbeInputError):
            raise result
        self.y_ndim_ = np.ndim(y)
        return self

    def transform(self, X: ArrayLike) -> NDArray:
        """Project X on the components: ``(X - x_mean_) @ x_rotations_``, streamed over row blocks."""
        return transform_shared(X, [self], block_bytes=self.block_bytes)[0]

    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None, **fit_params: Any) -> NDArray:
        """Fit and return the training scores (no extra pass over X)."""
        if y is None:
            raise ProbeInputError("PLS is supervised: fit_transform needs y")
        return self.fit(X, y, **fit_params).x_scores_

    def predict(self, X: ArrayLike) -> NDArray:
        """Regression prediction of y, as scikit-learn's ``PLSRegression.predict``."""
        pred = self.transform(X).astype(np.float64) @ self.y_loadings_.T + self.y_mean_
        return pred[:, 0] if self.y_ndim_ == 1 else pred

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def fit_shared(
    X: ArrayLike,
    Y: ArrayLike,
    masks: ArrayLike | None = None,
    n_components: int = 8,
    *,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    max_bytes: int | None = None,
    widths: Sequence[int] | None = None,
) -> list[PLS | ProbeInputError]:
    """One PLS1 per column of Y (or, with ``widths``, one PLS per group of columns: PLS2 for a group of
    several), each on its own rows of X, sharing every pass over X.

    Target ``a`` gets the model ``PLS(n_components).fit(X[masks[:, a]], Y[masks[:, a], a])`` would give (up
    to rounding), without copying rows of X and with ``n_components + 1`` passes over X for all targets
    together. With ``widths``, target ``a`` is the ``widths[a]`` columns of Y after those of the targets
    before it (a multi-class target's one-hot columns: PLS-DA). A target that cannot be fitted (constant in
    its rows, too few rows, no covariance with X) gets the :class:`~faceprobe.errors.ProbeInputError` that
    fit would raise, in its slot; the others still fit.

    Parameters
    ----------
    X : array-like of shape (n, m)
        An ndarray, memmap or zarr array, read in row blocks and never copied.
    Y : array-like of shape (n, A), or (n, sum(widths))
        One column per target (``widths[a]`` columns of target ``a``). Values outside a target's rows are
        ignored (they may be NaN).
    masks : bool array of shape (n, A), optional
        The rows each target is fitted on; None fits every target on all rows.
    n_components, block_bytes : int
        As for :class:`PLS`.
    max_bytes : int, optional
        Budget for the working state, about ``(2 n_components + 5 + 5 threads) m`` values of the compute dtype
        per target (weights, loadings, cross-products, means, the sums of a pass, and per thread of a pass its
        partial sums and four rows of each block of X it reads: :func:`target_state_bytes`). Targets are
        fitted in groups that fit in it, each group costing its own ``n_components + 1`` passes. By default
        the larger of 1 GiB and half of X when X is in memory (in the compute dtype); an X read from disk
        (a memory map, a zarr array, a layer of the activation store) or streamed takes no memory, so 1 GiB.
        Each fitted model keeps ``(3 n_components + 2) m`` values (weights, loadings, rotations, VIP and
        means) after the fit.

    Returns
    -------
    list of A fitted :class:`PLS` (``x_scores_`` holds the scores of the target's rows, in row order) or
    :class:`~faceprobe.errors.ProbeInputError`.
    """
    fits = fit_transform_shared(
        X, Y, masks, n_components, block_bytes=block_bytes, max_bytes=max_bytes, widths=widths
    )
    return [fit if isinstance(fit, ProbeInputError) else fit.model for fit in fits]


@dataclass(frozen=True)
class SharedFit:
    """A model fitted by :func:`fit_transform_shared`, with its transform of the rows asked for."""

    model: PLS
    rows: NDArray[np.intp]  # rows of X, increasing
    scores: NDArray  # model.transform(X[rows]), in X's compute dtype


_EMPTY_ROWS = np.zeros(0, dtype=np.intp)
_NO_SCORES = np.zeros((0, 0))


def fit_transform_shared(
    X: ArrayLike,
    Y: ArrayLike,
    masks: ArrayLike | None = None,
    n_components: int = 8,
    *,
    scored: ArrayLike | None = None,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    max_bytes: int | None = None,
    widths: Sequence[int] | None = None,
) -> list[SharedFit | ProbeInputError]:
    """:func:`fit_shared`, each fitted model with its ``transform`` of the rows ``scored[:, a]`` of X (n x A
    bool; none when None), taken from the fit's own passes: no pass more.

    Every pass multiplies each block it reads by the weights of all targets, so ``X w`` of a row is known
    for every component once the fit ends, and ``transform`` is ``(X W - mean W) (P'W)^-1`` (equal to
    ``(X - mean) @ x_rotations_`` up to rounding). Blocks holding scored rows are read even when no target
    fits on them. Parameters and errors otherwise as for :func:`fit_shared`.
    """
    blocks = _RowBlocks(X, block_bytes)
    n = blocks.n
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ProbeInputError(
            f"Y must be (samples of X = {n}, targets), one column per target; got shape {Y.shape}"
        )
    widths = [1] * Y.shape[1] if widths is None else [int(w) for w in widths]
    if sum(widths) != Y.shape[1] or min(widths, default=1) < 1:
        raise ProbeInputError(f"widths {widths} must be positive and add up to Y's {Y.shape[1]} columns")
    n_targets = len(widths)
    starts = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    masks = _row_sets("masks", masks, (n, n_targets))
    scored = _row_sets("scored", scored, (n, n_targets))
    if n_targets == 0:
        return []
    _check_n_components(n_components)
    itemsize = blocks.dtype.itemsize
    # counted alike wherever X is (in RAM, on disk, streamed): the groups, and so the blocks and the sums'
    # order, do not depend on it
    per_target = target_state_bytes(n, blocks.m, n_components, itemsize=itemsize)
    # an X read from disk (a memory map, a zarr array, a layer of the store) or streamed is not in memory
    in_memory = isinstance(blocks.X, np.ndarray) and not isinstance(blocks.X, np.memmap)
    held = n * blocks.m * itemsize if in_memory else 0
    budget = max(MIN_STATE_BYTES, held // 2) if max_bytes is None else max_bytes
    n_groups = -(-n_targets // max(1, budget // per_target))
    # Blocks of at least 4 rows per target: each block is multiplied by the k x m weights and adds into
    # k x m sums, whose traffic fewer rows per block do not amortise (see docs/benchmarks.md).
    blocks = _RowBlocks(X, block_bytes, min_rows=max(_MIN_BLOCK_ROWS, 4 * -(-n_targets // n_groups)))
    results: list[SharedFit | ProbeInputError] = []
    for group in np.array_split(np.arange(n_targets), n_groups):
        models = [PLS(n_components, block_bytes=block_bytes) for _ in group]
        taken = np.concatenate([np.arange(starts[a], starts[a + 1]) for a in group]).astype(np.intp)
        ends = np.cumsum([widths[a] for a in group])
        columns = [slice(int(end - widths[a]), int(end)) for a, end in zip(group, ends, strict=True)]
        group_masks = None if masks is None else masks[:, group]
        group_scored = None if scored is None else scored[:, group]
        results += _fit_lockstep(blocks, Y[:, taken], columns, group_masks, models, group_scored)
    for result, width in zip(results, widths, strict=True):
        if isinstance(result, SharedFit):
            result.model.y_ndim_ = 1 if width == 1 else 2
    return results


def target_state_bytes(
    n: int, m: int, n_components: int = 8, threads: int | None = None, itemsize: int = 4
) -> int:
    """Working memory of one target of :func:`fit_transform_shared` on an n x m X: its weights, loadings,
    cross-products and means, the sums of a pass, and per thread of a pass its partial sums and four rows
    of each block it reads (``threads``: as many as a pass over an X held in RAM gets here), plus its
    scores. ``max_bytes`` is counted in these."""
    if threads is None:
        threads = max(1, min(_BLAS.threads(), usable_cpus(), _MAX_WORKERS))
    return (2 * n_components + 5 + 5 * threads) * m * itemsize + (n_components + 4) * n * 8


def _row_sets(name: str, rows: ArrayLike | None, shape: tuple[int, int]) -> NDArray[np.bool_] | None:
    """A boolean matrix of rows per target as given, or the one-line error that says what it must be."""
    if rows is None:
        return None
    rows = np.asarray(rows)
    if rows.dtype != bool or rows.shape != shape:
        raise ProbeInputError(
            f"{name} must be a boolean array shaped like Y {shape} (one column per target); "
            f"got {rows.dtype} {rows.shape}"
        )
    return rows


def transform_shared(
    X: ArrayLike, models: Sequence[PLS], *, block_bytes: int = _DEFAULT_BLOCK_BYTES
) -> list[NDArray]:
    """Each model's ``transform(X)``, in one pass over X with one product per block for all models."""
    for model in models:
        check_is_fitted(model, "x_rotations_")
    blocks = _RowBlocks(X, block_bytes)
    for model in models:
        if model.n_features_in_ != blocks.m:
            raise ProbeInputError(f"X has {blocks.m} features; this PLS was fitted on {model.n_features_in_}")
    if not models:
        return []
    rotations = [model.x_rotations_.astype(blocks.dtype, copy=False) for model in models]
    R = np.concatenate(rotations, axis=1)
    offset = np.concatenate(
        [model.x_mean_.astype(blocks.dtype) @ r for model, r in zip(models, rotations, strict=True)]
    )
    out = np.empty((blocks.n, R.shape[1]), dtype=blocks.dtype)
    R_operand = blocks.math.operand(R)

    def worker() -> Callable[[slice], None]:
        read = blocks.reader()

        def project(chunk: slice) -> None:
            for rows, block in read(chunk):
                blocks.math.block_times(block, R_operand, out=out[rows])
                out[rows] -= offset

        return project

    with _BLAS.one_thread():
        _each_chunk(blocks, worker)
    return np.split(out, np.cumsum([r.shape[1] for r in rotations])[:-1], axis=1)


def _check_n_components(n_components: Any) -> int:
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ProbeInputError(f"n_components must be a positive integer; got {n_components!r}")
    return int(n_components)


def _target_error(y: NDArray, n_components: int, n_features: int) -> ProbeInputError | None:
    """The error PLS.fit raises for these targets (the rows one model sees), or None if they can be fitted."""
    n = y.shape[0]
    if not np.all(np.isfinite(y)):
        return ProbeInputError("y has NaN or inf values")
    if n and np.all(y.std(axis=0) == 0):
        return ProbeInputError("y is constant (a single class?): a probe needs both classes")
    if n_components > min(n - 1, n_features):
        return ProbeInputError(
            f"n_components={n_components} needs more than {n_components} samples and at least "
            f"{n_components} features; got {n} samples and {n_features} features (lower n_components)"
        )
    return None


@dataclass
class _Target:
    """One model's state in a lockstep fit: each pass fills a row of W and P (components x features: each
    component's m values together, which the per-component updates read and write whole) and a column of
    T and C."""

    index: int  # its slot in the result list
    columns: slice  # its columns of the cross-products M and of the deflated targets
    rows: NDArray[np.bool_] | None  # its rows of X (None: all)
    mean_row: int  # its row of the column means (targets with the same rows share one)
    y_mean: NDArray[np.float64]
    W: NDArray
    P: NDArray
    T: NDArray[np.float64]
    C: NDArray[np.float64]
    scored: NDArray[np.intp]  # rows whose transform the fit returns
    raw: NDArray[np.float64]  # X w of those rows, a column per component
    mean_w: NDArray[np.float64]  # mean w, per component
    tol: float = 0.0  # stop when the deflated cross-product is this small
    left: float = 0.0  # the norm of the deflated cross-product
    k: int = 0  # components found so far


@_with_one_blas_thread
def _fit_lockstep(
    blocks: _RowBlocks,
    Y: NDArray[np.float64],
    columns: Sequence[slice],
    masks: NDArray[np.bool_] | None,
    models: Sequence[PLS],
    scored: NDArray[np.bool_] | None = None,
) -> list[SharedFit | ProbeInputError]:
    """Fit ``models[i]`` on the targets ``Y[:, columns[i]]`` over the rows ``masks[:, i]`` (all rows if None),
    with its transform of the rows ``scored[:, i]`` (none if None).

    The models share ``n_components``; each pass over X serves all of them, and each stops on its own when X
    runs out of covariance with its targets. A model that cannot be fitted is replaced by its error.

    The transform comes from the passes' own products: ``(X - mean) R = (X W - mean W) (P'W)^-1`` with
    ``R = W (P'W)^-1`` the rotations, and ``X W`` is what each pass multiplies every block it reads by.
    """
    n, m, dtype = blocks.n, blocks.m, blocks.dtype
    n_components = _check_n_components(models[0].n_components)
    results: list[SharedFit | ProbeInputError] = []
    live: list[tuple[int, slice, NDArray[np.bool_] | None]] = []
    for i, cols in enumerate(columns):
        rows = None if masks is None else masks[:, i]
        error = _target_error(Y[:, cols] if rows is None else Y[rows, cols], n_components, m)
        results.append(error if error is not None else SharedFit(models[i], _EMPTY_ROWS, _NO_SCORES))
        if error is None:
            live.append((i, cols, rows))
    if not live:
        return results

    # The deflated targets, centred on (and zero outside) each target's rows, and one indicator per row set.
    widths = [Y[:, cols].shape[1] for _, cols, _ in live]
    starts = np.concatenate([[0], np.cumsum(widths)])
    Yd = np.zeros((n, int(starts[-1])))
    if masks is None:
        indicators, mean_rows = np.ones((n, 1), dtype=bool), np.zeros(len(live), dtype=np.intp)
    else:
        indicators, inverse = np.unique(masks[:, [i for i, _, _ in live]], axis=1, return_inverse=True)
        mean_rows = inverse.reshape(-1)  # numpy 2.0.0 shaped it like the input
    targets = []
    for (i, cols, rows), start, width, mean_row in zip(live, starts[:-1], widths, mean_rows, strict=True):
        y = Y[:, cols] if rows is None else Y[rows, cols]
        scored_rows = _EMPTY_ROWS if scored is None else np.flatnonzero(scored[:, i])
        target = _Target(
            index=i,
            columns=slice(int(start), int(start + width)),
            rows=rows,
            mean_row=int(mean_row),
            y_mean=y.mean(axis=0),
            W=np.zeros((n_components, m), dtype=dtype),
            P=np.zeros((n_components, m), dtype=dtype),
            T=np.zeros((n, n_components)),
            C=np.zeros((width, n_components)),
            scored=scored_rows,
            raw=np.zeros((len(scored_rows), n_components)),
            mean_w=np.zeros(n_components),
        )
        Yd[slice(None) if rows is None else rows, target.columns] = y - target.y_mean
        targets.append(target)

    # One pass: [Yd, indicators]'X, the cross-products X'Yc = Xc'Yc and the column sums over each row set.
    V = np.column_stack([Yd, indicators]).astype(dtype)
    with np.errstate(invalid="ignore"):  # non-finite X (0 * inf in a product) is reported just below
        acc = _accumulate_vtx(
            blocks,
            V.shape[1],
            lambda rows, block: V[rows],
            None if masks is None else indicators,
        )
    M, means = acc[: Yd.shape[1]], acc[Yd.shape[1] :]
    finite = np.all(np.isfinite(means), axis=0)
    if not np.all(finite):
        raise ProbeInputError(
            f"X has NaN or inf values (first in feature {int(np.argmin(finite))}); a float16 overflow? "
            "extract in float32 or drop the layer"
        )
    means /= indicators.sum(axis=0).astype(dtype)[:, None]
    for target in targets:  # a target with no covariance at all (tol 0) is never active
        target.left = float(np.linalg.norm(M[target.columns]))
        target.tol = (1e-10 if dtype == np.float64 else 1e-5) * target.left

    state = _LockstepState(M, means, Yd)
    with _PerTarget(_target_threads(m, len(targets))) as each:
        for k in range(n_components):
            active = [t for t in targets if t.k == k and t.left > t.tol]
            if not active:
                break
            W = np.empty((len(active), m), dtype=dtype)
            offset = np.empty((n, len(active)))
            each(functools.partial(_next_weights, state, k, W, offset), active)
            keep = None if masks is None else indicators[:, [t.mean_row for t in active]]
            reach = None
            if keep is not None and scored is not None:
                reach = keep | scored[:, [t.index for t in active]]
            found = _scores_and_cross(blocks, W, offset, keep, reach)
            each(functools.partial(_deflate, state, k, W, found), active)

        def finish(_: int, t: _Target) -> None:
            if t.k == 0:
                results[t.index] = ProbeInputError(
                    "X carries no variance related to y (a constant layer output?)"
                )
            else:
                results[t.index] = _set_fitted(models[t.index], t, means[t.mean_row].copy())

        each(finish, targets)
    return results


@dataclass(frozen=True)
class _LockstepState:
    """What the targets of a lockstep fit share: the deflated cross-products ``M`` (a row per target
    column), the column means of each row set, and the deflated targets ``Yd`` (a column per target
    column). Each target updates its own rows and columns only."""

    M: NDArray
    means: NDArray
    Yd: NDArray[np.float64]


def _next_weights(state: _LockstepState, k: int, W: NDArray, offset: NDArray, j: int, t: _Target) -> None:
    """Component ``k``'s weights of target ``t`` into ``W[j]``, and the offset of its scores into
    ``offset[:, j]``: implicit centring and deflation, ``t = X w - (mean w + T_prev P_prev' w)``."""
    W[j] = _dominant_direction(state.M[t.columns].T)
    t.mean_w[k] = float(state.means[t.mean_row] @ W[j])
    offset[:, j] = t.mean_w[k] + t.T[:, :k] @ (t.P[:k] @ W[j]).astype(np.float64)


def _deflate(
    state: _LockstepState,
    k: int,
    W: NDArray,
    found: tuple[NDArray[np.float64], NDArray, NDArray[np.float64]],
    j: int,
    t: _Target,
) -> None:
    """Target ``t``'s component ``k`` from a pass's scores, cross-products and raw products (its column
    ``j``): its loadings, y-loadings, and the deflation of its targets and cross-products."""
    scores, xt, raw = found
    dtype = W.dtype.type
    t.raw[:, k] = raw[t.scored, j]
    s = scores[:, j]
    tt = float(s @ s)
    if tt <= 0.0 or _cancelled(s, raw[:, j] if t.rows is None else raw[t.rows, j], W.dtype):
        return
    # (X - mean)'t = X't - mean * sum(t); sum(t) is ~0 but not exactly.
    x_t = xt[j] - state.means[t.mean_row] * dtype(s.sum())
    t.P[k] = (x_t - (t.T[:, :k].T @ s).astype(W.dtype) @ t.P[:k]) / dtype(tt)
    ty = s @ state.Yd[:, t.columns]
    t.C[:, k] = ty / tt
    state.Yd[:, t.columns] -= np.outer(s, t.C[:, k])
    state.M[t.columns] -= np.outer(ty.astype(W.dtype), t.P[k])
    t.left = float(np.linalg.norm(state.M[t.columns]))
    t.W[k], t.T[:, k] = W[j], s
    t.k += 1


def _cancelled(scores: NDArray[np.float64], raw: NDArray[np.float64], dtype: np.dtype) -> bool:
    """Whether a component's scores ``X w - offset`` are only what rounding left of the products ``X w``:
    X constant on the rows (or no longer varying along ``w``). The cross-products that chose ``w`` are then
    rounding too, not covariance, and fitting on them would give a singular ``P'W``."""
    largest = float(np.max(np.abs(raw), initial=0.0))
    return float(np.max(np.abs(scores), initial=0.0)) <= _CANCELLED * np.finfo(dtype).eps * largest


class _PerTarget:
    """Runs a function on each target of a lockstep fit, on threads when there are several: between
    passes each target's updates are vector operations on its own m-long state (and its own columns of
    the shared cross-products), which NumPy runs without holding the GIL; their results do not depend on
    the threads."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def __enter__(self) -> Callable[[Callable[[int, _Target], None], Sequence[_Target]], None]:
        return self._each

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _each(self, func: Callable[[int, _Target], None], targets: Sequence[_Target]) -> None:
        if self._pool is None:
            for j, target in enumerate(targets):
                func(j, target)
            return
        errors = np.geterr()  # new threads start with NumPy's default error handling

        def run(j: int, target: _Target) -> None:
            with np.errstate(**errors):
                func(j, target)

        for done in [self._pool.submit(run, j, target) for j, target in enumerate(targets)]:
            done.result()


def _target_threads(m: int, n_targets: int) -> int:
    """Threads for the per-target updates between passes: as many as a pass gets (:func:`_pass_threads`),
    one unless there is enough work to share (starting a task costs about what updating a few thousand
    features does)."""
    if _legacy_passes() or n_targets * m < _MIN_SHARED_UPDATE:
        return 1
    return max(1, min(_BLAS.threads(), usable_cpus(), n_targets, _MAX_WORKERS))


def _set_fitted(model: PLS, target: _Target, mean: NDArray) -> SharedFit:
    """The model's fitted state from its lockstep state, with the transform of its scored rows."""
    a = target.k
    model.n_components_ = a
    model.x_mean_ = mean
    model.y_mean_ = target.y_mean
    model.x_weights_ = target.W[:a].T
    model.x_loadings_ = target.P[:a].T
    scores = target.T[:, :a] if target.rows is None else target.T[target.rows, :a]
    model.x_scores_ = scores.astype(mean.dtype)
    model.y_loadings_ = target.C[:, :a]
    inverse = np.linalg.inv(model.x_loadings_.T.astype(np.float64) @ model.x_weights_.astype(np.float64))
    model.x_rotations_ = model.x_weights_ @ inverse.astype(mean.dtype)
    model.vip_ = vip_scores(model.x_weights_, model.x_scores_, model.y_loadings_)
    model.n_features_in_ = target.W.shape[1]
    scores = (target.raw[:, :a] - target.mean_w[:a]) @ inverse
    return SharedFit(model, target.scored, scores.astype(mean.dtype))


def _dominant_direction(M: NDArray) -> NDArray:
    """Unit vector w maximising ||M'w||, with scikit-learn's sign convention (largest |w_j| positive)."""
    if M.shape[1] == 1:
        w = M[:, 0].astype(np.float64)
    else:
        gram = (M.T @ M).astype(np.float64)
        _, vectors = np.linalg.eigh(gram)
        w = (M @ vectors[:, -1].astype(M.dtype)).astype(np.float64)
    w /= np.linalg.norm(w)
    if w[np.argmax(np.abs(w))] < 0:
        w = -w
    return w.astype(M.dtype)


def _scores_and_cross(
    blocks: _RowBlocks,
    W: NDArray,
    offset: NDArray[np.float64],
    keep: NDArray[np.bool_] | None,
    reach: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.float64], NDArray, NDArray[np.float64]]:
    """One pass for the k weight vectors in the rows of W: scores ``X w - offset`` (zero where ``keep`` is
    False), n x k, the k x m products ``t'X``, reading each block once, and the raw products ``X w`` of
    every row the pass reads (zero in the blocks it skips). A block no target ``reach``es (``keep``'s rows
    when None) is skipped.

    Every block is multiplied by all k weights, also where some targets have no rows: the pass is bound
    by reading X, and picking each block's targets' rows of W out first cost as much again."""
    t = np.zeros((blocks.n, W.shape[0]), dtype=np.float64)
    raw = np.zeros_like(t)
    math = blocks.math
    weights = math.operand(W).T

    def scores(rows: slice, block: Any) -> NDArray:
        product = math.block_times(block, weights)
        raw[rows] = product
        np.subtract(product, offset[rows], out=t[rows])
        if keep is not None:
            t[rows] *= keep[rows]
        return t[rows].astype(blocks.dtype)

    return t, _accumulate_vtx(blocks, W.shape[0], scores, keep if reach is None else reach), raw


def _accumulate_vtx(
    blocks: _RowBlocks,
    k: int,
    weights: Callable[[slice, Any], NDArray],
    support: NDArray[np.bool_] | None = None,
) -> NDArray:
    """``V'X`` (k x m) in one pass, where ``weights(rows, block)`` gives the block's rows of V (rows x k).

    A block with no row in ``support`` (n x k, or n x anything: the rows V may be nonzero in) is skipped,
    ``weights`` not called. Each block's product adds into its thread's sums in place
    (:meth:`_TorchMath.add_vt`). V is on the host; the products and the sums are where the blocks are
    (``blocks.math``), and the sum comes back to the host.
    """
    math = blocks.math
    acc = math.zeros(k, blocks.m)

    def worker() -> Callable[[slice], Any]:
        read = blocks.reader()
        partial = math.zeros(k, blocks.m)

        def accumulate(chunk: slice) -> Any:
            partial[...] = 0
            for rows, block in read(chunk):
                if support is not None and not support[rows].any():  # rows no target fits on: in no sum
                    continue
                math.add_vt(partial, weights(rows, block), block)
            return partial

        return accumulate

    _each_chunk(blocks, worker, acc.__iadd__)
    return math.host(acc)


def vip_scores(weights: NDArray, scores: NDArray, y_loadings: NDArray) -> NDArray:
    """Variable importance in projection, standard form: the mean of VIP^2 over features is 1.

    ``VIP_j = sqrt(m * sum_a SS_a (w_ja / ||w_a||)^2 / sum_a SS_a)`` with ``SS_a = ||q_a||^2 t_a't_a``, the
    part of y's sum of squares explained by component ``a``. (The thesis prints its eq. 2.4 without the square
    on the weight and without the normaliser ``sum_a SS_a``; this is the standard definition of Wold et al.)
    """
    W = np.asarray(weights)
    ss = np.sum(np.asarray(y_loadings, dtype=np.float64) ** 2, axis=0) * np.sum(
        np.asarray(scores, dtype=np.float64) ** 2, axis=0
    )
    norms = np.linalg.norm(W.astype(np.float64), axis=0)
    coeff = (ss / (norms**2 * ss.sum())).astype(W.dtype)
    return np.sqrt(W.shape[0] * (np.square(W) @ coeff))


def channel_vip(vip: ArrayLike, shape: tuple[int, ...], channels_last: bool = False) -> NDArray:
    """Mean VIP of each channel's neurons for a layer of shape (C, H, W) (or (H, W, C) with channels_last).

    A 1-D shape (a fully connected layer) has one neuron per channel, so its channel VIP is the VIP itself.
    """
    v = np.asarray(vip)
    if int(np.prod(shape)) != v.size:
        raise ProbeInputError(f"{v.size} VIP scores do not fit a layer of shape {tuple(shape)}")
    if len(shape) == 1:
        return v.copy()
    if channels_last:
        return v.reshape(-1, shape[-1]).mean(axis=0)
    return v.reshape(shape[0], -1).mean(axis=1)


def top_k_neurons(vip: ArrayLike, k: int = 8) -> NDArray[np.intp]:
    """Flat indices of the k highest-VIP neurons, best first (ties broken by index, so runs are stable)."""
    v = np.asarray(vip)
    k = min(k, v.size)
    part = np.argpartition(-v, k - 1)[:k]
    return part[np.lexsort((part, -v[part]))]


def top_k_channels(
    vip: ArrayLike, shape: tuple[int, ...], k: int = 8, channels_last: bool = False
) -> NDArray:
    """Indices of the k channels with the highest mean VIP, best first."""
    return top_k_neurons(channel_vip(vip, shape, channels_last), k)


def channel_columns(channels: ArrayLike, shape: tuple[int, ...], channels_last: bool = False) -> NDArray:
    """Flat feature indices of the given channels, to slice a flattened layer output (samples x features)."""
    ch = np.asarray(channels, dtype=np.intp)
    if len(shape) == 1:
        return ch
    per_channel = int(np.prod(shape[1:])) if not channels_last else int(np.prod(shape[:-1]))
    if channels_last:
        return (np.arange(per_channel)[None, :] * shape[-1] + ch[:, None]).ravel()
    return (ch[:, None] * per_channel + np.arange(per_channel)[None, :]).ravel()
