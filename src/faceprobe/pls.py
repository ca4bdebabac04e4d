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
float32); the small per-component quantities are kept in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from faceprobe.errors import ProbeInputError

__all__ = ["PLS", "channel_vip", "top_k_channels", "top_k_neurons", "vip_scores"]

_DEFAULT_BLOCK_BYTES = 4 * 2**20  # measured fastest here: a block stays in cache for its two products
_MIN_BLOCK_ROWS = 16  # fewer rows per product run far below memory bandwidth on wide layers


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


class _RowBlocks:
    """Reads a 2-D array-like (ndarray, memmap, zarr array, ...) in row blocks of the compute dtype.

    A block of an ndarray already in the compute dtype is a view; anything else is converted one block at a
    time, so converting never costs more than ``block_bytes`` of extra memory.
    """

    def __init__(self, X: Any, block_bytes: int) -> None:
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        if len(X.shape) != 2:
            raise ProbeInputError(f"X must be 2-D (samples x features); got shape {tuple(X.shape)}")
        self.X = X
        self.n, self.m = (int(s) for s in X.shape)
        self.dtype = _compute_dtype(np.dtype(X.dtype))
        rows = block_bytes // max(1, self.m * self.dtype.itemsize)
        self.rows = int(min(self.n, max(_MIN_BLOCK_ROWS, rows)))

    def __iter__(self) -> Iterator[tuple[slice, NDArray]]:
        for start in range(0, self.n, self.rows):
            rows = slice(start, min(start + self.rows, self.n))
            yield rows, np.asarray(self.X[rows], dtype=self.dtype)


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
        blocks = _RowBlocks(X, self.block_bytes)
        n, m, dtype = blocks.n, blocks.m, blocks.dtype
        Y = _check_targets(y, n)
        self.y_ndim_ = np.ndim(y)
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ProbeInputError(f"n_components must be a positive integer; got {self.n_components!r}")
        if self.n_components > min(n - 1, m):
            raise ProbeInputError(
                f"n_components={self.n_components} needs more than {self.n_components} samples and at least "
                f"{self.n_components} features; got {n} samples and {m} features (lower n_components)"
            )
        self.y_mean_ = Y.mean(axis=0)
        Y = Y - self.y_mean_

        # One pass: [Yc, 1]'X, the cross-product (sum(Yc) = 0, so X'Yc = Xc'Yc) and the column sums.
        YI = np.column_stack([Y, np.ones(n)]).astype(dtype)
        MT = _accumulate_vtx(blocks, YI.shape[1], lambda rows, block: YI[rows])
        sums = MT[-1]
        M = np.ascontiguousarray(MT[:-1].T)
        if not np.all(np.isfinite(sums)):
            bad = int(np.flatnonzero(~np.isfinite(sums))[0])
            raise ProbeInputError(
                f"X has NaN or inf values (first in feature {bad}); a float16 overflow? "
                "extract in float32 or drop the layer"
            )
        mean = sums / dtype.type(n)
        scale0 = float(np.linalg.norm(M))
        if scale0 == 0.0:
            raise ProbeInputError("X carries no variance related to y (a constant layer output?)")
        tol = (1e-10 if dtype == np.float64 else 1e-5) * scale0

        A = self.n_components
        W = np.zeros((m, A), dtype=dtype)
        P = np.zeros((m, A), dtype=dtype)
        T = np.zeros((n, A), dtype=np.float64)
        C = np.zeros((Y.shape[1], A), dtype=np.float64)
        a = 0
        while a < A and float(np.linalg.norm(M)) > tol:
            w = _dominant_direction(M)
            # Scores and X't of the deflated X, deflating implicitly through the earlier P and T.
            t, xt = _scores_and_cross(blocks, w, mean, T[:, :a], (P[:, :a].T @ w).astype(np.float64))
            tt = float(t @ t)
            if tt <= 0.0:
                break
            P[:, a] = (xt - P[:, :a] @ (T[:, :a].T @ t).astype(dtype)) / dtype.type(tt)
            ty = t @ Y
            C[:, a] = ty / tt
            Y = Y - np.outer(t, C[:, a])
            M -= np.outer(P[:, a], ty.astype(dtype))
            W[:, a], T[:, a] = w, t
            a += 1

        if a == 0:
            raise ProbeInputError("X carries no variance related to y (a constant layer output?)")
        self.n_components_ = a
        self.x_mean_ = mean
        self.x_weights_ = W[:, :a] if a < A else W
        self.x_loadings_ = P[:, :a] if a < A else P
        self.x_scores_ = T[:, :a].astype(dtype)
        self.y_loadings_ = C[:, :a]
        PW = self.x_loadings_.T.astype(np.float64) @ self.x_weights_.astype(np.float64)
        self.x_rotations_ = self.x_weights_ @ np.linalg.inv(PW).astype(dtype)
        self.vip_ = vip_scores(self.x_weights_, self.x_scores_, self.y_loadings_)
        self.n_features_in_ = m
        return self

    def transform(self, X: ArrayLike) -> NDArray:
        """Project X on the components: ``(X - x_mean_) @ x_rotations_``, streamed over row blocks."""
        check_is_fitted(self, "x_rotations_")
        blocks = _RowBlocks(X, self.block_bytes)
        if blocks.m != self.n_features_in_:
            raise ProbeInputError(f"X has {blocks.m} features; this PLS was fitted on {self.n_features_in_}")
        R = self.x_rotations_.astype(blocks.dtype, copy=False)
        offset = self.x_mean_.astype(blocks.dtype) @ R
        out = np.empty((blocks.n, R.shape[1]), dtype=blocks.dtype)
        for rows, block in blocks:
            out[rows] = block @ R - offset
        return out

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


def _check_targets(y: ArrayLike, n: int) -> NDArray[np.float64]:
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ProbeInputError(f"y must have one row per sample of X ({n}); got shape {np.shape(y)}")
    if not np.all(np.isfinite(Y)):
        raise ProbeInputError("y has NaN or inf values")
    if np.all(Y.std(axis=0) == 0):
        raise ProbeInputError("y is constant (a single class?): a probe needs both classes")
    return Y


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
    blocks: _RowBlocks, w: NDArray, mean: NDArray, T_prev: NDArray, correction: NDArray
) -> tuple[NDArray[np.float64], NDArray]:
    """One pass: scores of the deflated X on w, and X't accumulated block by block (reads each block once)."""
    t = np.empty(blocks.n, dtype=np.float64)
    shift = float(mean @ w)

    def scores(rows: slice, block: NDArray) -> NDArray:
        t[rows] = (block @ w).astype(np.float64) - shift - T_prev[rows] @ correction
        return t[rows, None].astype(blocks.dtype)

    xt = _accumulate_vtx(blocks, 1, scores)[0]
    # (X - mean)'t = X't - mean * sum(t); sum(t) is ~0 but not exactly.
    return t, xt - mean * blocks.dtype.type(t.sum())


def _accumulate_vtx(blocks: _RowBlocks, k: int, weights: Callable[[slice, NDArray], NDArray]) -> NDArray:
    """``V'X`` (k x m) in one pass, where ``weights(rows, block)`` gives the block's rows of V (rows x k).

    Each block's product goes into a reused buffer (no fresh m-sized temporary per block, which costs more
    than the product itself on wide layers).
    """
    acc = np.zeros((k, blocks.m), dtype=blocks.dtype)
    buffer = np.empty_like(acc)
    for rows, block in blocks:
        np.matmul(weights(rows, block).T, block, out=buffer)
        acc += buffer
    return acc


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
