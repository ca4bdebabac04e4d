"""The probes: PLS projection followed by quadratic discriminant analysis (or, for a continuous target, by the
PLS regression itself), as scikit-learn estimators.

The thesis measures how well a representation encodes an attribute by the validation accuracy of this
pipeline. PLS reduces a layer of up to millions of neurons to a few discriminative components; QDA then reads
them (non-linearly, which gains a little over a linear read-out). A handful of units (the top-8 VIP neurons, a
single neuron) are already low-dimensional, so with ``n_components=None`` QDA reads them directly.

Beyond the thesis, which probes binary attributes only and names multi-class and regression targets as
future work (by swapping the classifier), on purpose: :class:`MulticlassProbe` is PLS-DA (PLS2 on the one-hot
classes, then the same QDA), scored by balanced accuracy so that an unbalanced draw of classes is not read
as signal; :class:`RegressionProbe` is PLS regression with no classifier, scored by R^2 (``score``) and by
the mean absolute error in the target's unit (:meth:`RegressionProbe.mae`). Both keep the VIP definition
of :func:`faceprobe.pls.vip_scores` (mean VIP^2 = 1; for several columns of Y the explained sum of squares
of each component is summed over the columns).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from faceprobe.errors import ProbeInputError
from faceprobe.pls import PLS

__all__ = ["MulticlassProbe", "Probe", "RegressionProbe"]


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

    _one_hot = False  # two classes: PLS1 on the 0/1 labels (the thesis); more: PLS2 on the one-hot classes

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
        X = _validate(self, X, reset=True)
        y = _target_vector(type(self).__name__, y)
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
        one_hot = len(self.classes_) > 2 or self._one_hot
        Z = _project(self, X, np.eye(len(self.classes_))[encoded] if one_hot else encoded)
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

    def _features(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "qda_")
        return self._standardise(_read_features(self, X))

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


class MulticlassProbe(Probe):
    """PLS-DA + QDA for a target of several classes, scored by balanced accuracy (beyond the thesis).

    PLS2 is fitted on the one-hot classes (PLS-DA; with two classes too, so a two-class target of a
    multi-class column is read the same way), QDA on its standardised scores, as :class:`Probe`.
    :meth:`score` is the balanced accuracy (the mean of the per-class recalls): chance is ``1 / n_classes``
    whatever the class frequencies, where plain accuracy would reward predicting the commonest class.
    Parameters and attributes as :class:`Probe`.
    """

    _one_hot = True

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Balanced accuracy of :meth:`predict` on (X, y) (over the classes of y: a class predicted but absent
        from y adds no recall)."""
        predicted = self.predict(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": a small draw's lot
            return float(balanced_accuracy_score(y, predicted, sample_weight=sample_weight))


class RegressionProbe(RegressorMixin, BaseEstimator):
    """PLS regression of a continuous target, no classifier: scored by R^2 and by MAE (beyond the thesis).

    The prediction is PLS's own, ``(x - x_mean) @ rotations @ y_loadings' + y_mean``; with
    ``n_components=None`` the few units given are read by ordinary least squares (with an intercept)
    instead. :meth:`score` is R^2 (0 for the mean predictor, negative when worse than it), :meth:`mae` the
    mean absolute error in the target's unit.

    Parameters
    ----------
    n_components : int or None
        PLS components; None fits least squares on the raw features (a few selected units).
    block_bytes : int, optional
        Passed to :class:`PLS`.

    Attributes
    ----------
    pls_ : the fitted :class:`PLS` (None when ``n_components`` is None)
    coef_, intercept_ : the linear read-out of the features (the PLS scores, or the raw units)
    """

    def __init__(self, n_components: int | None = 8, *, block_bytes: int | None = None):
        self.n_components = n_components
        self.block_bytes = block_bytes

    def fit(self, X: ArrayLike, y: ArrayLike) -> RegressionProbe:
        """Fit PLS on (X, y) and the linear read-out of its scores (for PLS scores, which are orthogonal,
        exactly PLS's own y loadings).

        Raises
        ------
        ProbeInputError
            y is not 1-D numeric and finite, is constant, X and y disagree in length, or X has NaN/inf.
        """
        X = _validate(self, X, reset=True)
        y = _target_vector(type(self).__name__, y)
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ProbeInputError(f"y must be numbers for a regression probe; got {y.dtype}") from None
        if not np.all(np.isfinite(y)):
            raise ProbeInputError("y has NaN or inf values")
        if len(y) < 3 or np.all(y == y[0]):
            raise ProbeInputError("y is constant (or has fewer than 3 values): nothing to regress")
        Z = _project(self, X, y)
        design = np.column_stack([np.ones(len(Z)), Z])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        self.intercept_, self.coef_ = float(solution[0]), solution[1:]
        if not hasattr(self, "n_features_in_"):
            self.n_features_in_ = Z.shape[1] if self.pls_ is None else self.pls_.n_features_in_
        return self

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        check_is_fitted(self, "coef_")
        return _read_features(self, X) @ self.coef_ + self.intercept_

    def mae(self, X: ArrayLike, y: ArrayLike) -> float:
        """Mean absolute error of :meth:`predict` on (X, y), in the target's unit."""
        return float(mean_absolute_error(y, self.predict(X)))

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """R^2 of :meth:`predict` on (X, y): 1 is perfect, 0 the mean predictor's, below 0 worse."""
        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))


def _target_vector(name: str, y: ArrayLike) -> NDArray:
    """``y`` as a 1-D array (a column vector is a vector, as in every sklearn estimator)."""
    if y is None:
        raise ProbeInputError(f"{name} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.ndim != 1:
        raise ProbeInputError(f"y must be 1-D class labels; got shape {y.shape}")
    return y


def _project(estimator: Any, X: ArrayLike, target: NDArray) -> NDArray[np.float64]:
    """The features a probe reads, on the train rows: X itself (``n_components=None``) or the scores of a
    PLS fitted on (X, target), which ``estimator.pls_`` keeps."""
    if estimator.n_components is None:
        estimator.pls_ = None
        Z = _as_2d_float(X)
        if Z.shape[0] != len(target):
            raise ProbeInputError(f"X has {Z.shape[0]} samples but y has {len(target)}")
    else:
        kwargs = {} if estimator.block_bytes is None else {"block_bytes": estimator.block_bytes}
        estimator.pls_ = PLS(estimator.n_components, **kwargs).fit(X, target)
        Z = estimator.pls_.x_scores_.astype(np.float64)
    return _check_finite(Z)


def _read_features(estimator: Any, X: ArrayLike) -> NDArray[np.float64]:
    """What a fitted probe reads of X: the units themselves, or their PLS scores."""
    X = _validate(estimator, X, reset=False)
    pls = estimator.pls_
    return _check_finite(_as_2d_float(X) if pls is None else pls.transform(X).astype(np.float64))


def _validate(estimator: Any, X: ArrayLike, *, reset: bool) -> ArrayLike:
    """sklearn's checks of X (2-D, numeric, not sparse or complex, as many features as in fit) where
    they cost nothing: in-memory arrays keep their dtype and are not copied, NaN is left to the
    probe's own one-line error, and arrays read block by block (zarr, the activation store) pass as
    they are, PLS reading them without loading them whole."""
    if reset and hasattr(estimator, "n_features_in_"):
        del estimator.n_features_in_
    if hasattr(X, "shape") and hasattr(X, "dtype") and not isinstance(X, np.ndarray):
        if not hasattr(X, "format"):  # a lazily read array, not a scipy sparse matrix
            return X
    if estimator.n_components is None and not hasattr(X, "format") and not hasattr(X, "columns"):
        X = np.asarray(X)  # a few units: cheap to convert
        X = X[:, None] if X.ndim == 1 else X  # one unit's values are one feature
    try:
        X = validate_data(
            estimator,
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


def _as_2d_float(X: ArrayLike) -> NDArray[np.float64]:
    Z = np.asarray(X, dtype=np.float64)
    return Z[:, None] if Z.ndim == 1 else Z


def _check_finite(Z: NDArray) -> NDArray:
    if not np.all(np.isfinite(Z)):
        raise ProbeInputError(
            "X has NaN or inf values (a float16 overflow?); extract in float32 or drop the layer"
        )
    return Z
