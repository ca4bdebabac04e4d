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
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

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
        """Fit PLS on (X, y), standardise its training scores, and fit QDA on them.

        Parameters
        ----------
        X : array-like (n_samples, n_features)
            A layer's flattened activations (read without copying by :class:`PLS`, so float32 layers of any
            width are fine), or, with ``n_components=None``, the few units QDA reads directly.
        y : array-like (n_samples,)
            Class labels (any values; the thesis's attributes are binary). Each class needs more samples
            than QDA has inputs (``n_components``, or the number of units), else its covariance is
            singular.

        Returns
        -------
        self

        Raises
        ------
        ProbeInputError
            y is not 1-D or has fewer than two classes, a class has too few samples, X and y disagree in
            length, or X (or its PLS scores) has NaN/inf values: one-line problems a study records as the
            probe's note instead of an accuracy.
        """
        X = self._validate(X, reset=True)
        if y is None:
            raise ProbeInputError("Probe requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column vector is a vector, as in every sklearn classifier
        if y.ndim != 1:
            raise ProbeInputError(f"y must be 1-D class labels; got shape {y.shape}")
        check_classification_targets(y)  # continuous y: sklearn's own "Unknown label type" error
        self.classes_, encoded, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(self.classes_) < 2:
            raise ProbeInputError(
                "y has a single class (one class only): a probe needs positive and negative samples"
            )
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
        if not hasattr(self, "n_features_in_"):  # an array validate_data did not see (zarr, the store)
            self.n_features_in_ = Z.shape[1] if self.pls_ is None else self.pls_.n_features_in_
        return self

    def _validate(self, X: ArrayLike, *, reset: bool) -> ArrayLike:
        """sklearn's checks of X (2-D, numeric, not sparse or complex, as many features as in fit) where
        they cost nothing: in-memory arrays keep their dtype and are not copied, NaN is left to the
        probe's own one-line error, and arrays read block by block (zarr, the activation store) pass as
        they are, PLS reading them without loading them whole."""
        if reset and hasattr(self, "n_features_in_"):
            del self.n_features_in_
        if hasattr(X, "shape") and hasattr(X, "dtype") and not isinstance(X, np.ndarray):
            if not hasattr(X, "format"):  # a lazily read array, not a scipy sparse matrix
                return X
        if self.n_components is None and not hasattr(X, "format") and not hasattr(X, "columns"):
            X = np.asarray(X)  # a few units: cheap to convert
            X = X[:, None] if X.ndim == 1 else X  # one unit's values are one feature
        try:
            X = validate_data(
                self,
                X,
                reset=reset,
                accept_sparse=False,
                dtype="numeric",
                ensure_all_finite=False,
                ensure_min_samples=1,
            )
        except ValueError as err:
            raise ProbeInputError(" ".join(str(err).split())) from None
        return X

    def _features(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "qda_")
        X = self._validate(X, reset=False)
        Z = _as_2d_float(X) if self.pls_ is None else self.pls_.transform(X).astype(np.float64)
        return self._standardise(_check_finite(Z))

    def _standardise(self, Z: NDArray) -> NDArray[np.float64]:
        return (Z - self.center_) / self.scale_

    def decision_function(self, X: ArrayLike) -> NDArray:
        Z = self._features(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.qda_.decision_function(Z)

    def predict_proba(self, X: ArrayLike) -> NDArray:
        Z = self._features(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.qda_.predict_proba(Z)

    def predict(self, X: ArrayLike) -> NDArray:
        Z = self._features(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.classes_[self.qda_.predict(Z)]


def _as_2d_float(X: ArrayLike) -> NDArray[np.float64]:
    Z = np.asarray(X, dtype=np.float64)
    return Z[:, None] if Z.ndim == 1 else Z


def _check_finite(Z: NDArray) -> NDArray:
    if not np.all(np.isfinite(Z)):
        raise ProbeInputError(
            "X has NaN or inf values (a float16 overflow?); extract in float32 or drop the layer"
        )
    return Z
