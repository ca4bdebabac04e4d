"""The probe: PLS projection followed by quadratic discriminant analysis, as a scikit-learn classifier.

The thesis measures how well a representation encodes an attribute by the validation accuracy of this
pipeline. PLS reduces a layer of up to millions of neurons to a few discriminative components; QDA then reads
them (non-linearly, which gains a little over a linear read-out). A handful of units (the top-8 VIP neurons, a
single neuron) are already low-dimensional, so with ``n_components=None`` QDA reads them directly.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.utils.validation import check_is_fitted

from faceprobe.errors import ProbeInputError
from faceprobe.pls import PLS

__all__ = ["Probe"]


class Probe(ClassifierMixin, BaseEstimator):
    """PLS(n_components) + QDA classifier; with ``n_components=None``, QDA on the raw features.

    The inputs of QDA (PLS scores or raw units) are standardised on the training set first, so that
    ``reg_param`` (QDA's shrinkage of each class covariance towards the identity) means the same for every
    layer whatever the scale of its activations.

    Parameters
    ----------
    n_components : int or None
        PLS components; None skips PLS (for a few selected units).
    reg_param : float
        QDA covariance regularisation on standardised inputs; a small value keeps QDA stable when a class
        covariance is nearly singular (few samples, collinear units, dead neurons).
    block_bytes : int, optional
        Passed to :class:`PLS` (row-block size when reading X).

    Attributes
    ----------
    classes_ : the class labels
    pls_ : the fitted :class:`PLS` (None when ``n_components`` is None)
    qda_ : the fitted ``QuadraticDiscriminantAnalysis``
    """

    def __init__(
        self, n_components: int | None = 8, *, reg_param: float = 1e-3, block_bytes: int | None = None
    ):
        self.n_components = n_components
        self.reg_param = reg_param
        self.block_bytes = block_bytes

    def fit(self, X: ArrayLike, y: ArrayLike) -> Probe:
        y = np.asarray(y)
        if y.ndim != 1:
            raise ProbeInputError(f"y must be 1-D class labels; got shape {y.shape}")
        self.classes_, encoded, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(self.classes_) < 2:
            raise ProbeInputError("y has a single class: a probe needs positive and negative samples")
        if counts.min() < 2:
            raise ProbeInputError(
                f"class {self.classes_[counts.argmin()].item()!r} has {counts.min()} sample; "
                "QDA needs at least 2 per class"
            )
        if self.n_components is None:
            self.pls_ = None
            Z = _as_2d_float(X)
            if Z.shape[0] != len(y):
                raise ProbeInputError(f"X has {Z.shape[0]} samples but y has {len(y)}")
        else:
            kwargs = {} if self.block_bytes is None else {"block_bytes": self.block_bytes}
            target = encoded if len(self.classes_) == 2 else np.eye(len(self.classes_))[encoded]
            self.pls_ = PLS(self.n_components, **kwargs).fit(X, target)
            Z = self.pls_.x_scores_.astype(np.float64)
        _check_finite(Z)
        if counts.min() <= Z.shape[1]:
            raise ProbeInputError(
                f"QDA needs more samples per class than inputs: {counts.min()} samples in the smallest class "
                f"for {Z.shape[1]} inputs; use fewer components or units, or more samples"
            )
        self.center_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.qda_ = QuadraticDiscriminantAnalysis(reg_param=self.reg_param)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collinearity warnings: reg_param is the documented remedy
            self.qda_.fit(self._standardise(Z), encoded)
        self.n_features_in_ = Z.shape[1] if self.pls_ is None else self.pls_.n_features_in_
        return self

    def _features(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "qda_")
        Z = _as_2d_float(X) if self.pls_ is None else self.pls_.transform(X).astype(np.float64)
        return self._standardise(_check_finite(Z))

    def _standardise(self, Z: NDArray) -> NDArray[np.float64]:
        return (Z - self.center_) / self.scale_

    def decision_function(self, X: ArrayLike) -> NDArray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.qda_.decision_function(self._features(X))

    def predict_proba(self, X: ArrayLike) -> NDArray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.qda_.predict_proba(self._features(X))

    def predict(self, X: ArrayLike) -> NDArray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.classes_[self.qda_.predict(self._features(X))]


def _as_2d_float(X: ArrayLike) -> NDArray[np.float64]:
    Z = np.asarray(X, dtype=np.float64)
    return Z[:, None] if Z.ndim == 1 else Z


def _check_finite(Z: NDArray) -> NDArray:
    if not np.all(np.isfinite(Z)):
        raise ProbeInputError(
            "X has NaN or inf values (a float16 overflow?); extract in float32 or drop the layer"
        )
    return Z
