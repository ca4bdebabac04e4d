"""Single-unit probes, vectorised, and the VIP study's sampling of neurons.

A single neuron is a one-dimensional input, so its QDA probe has a closed form: two Gaussians, one per
class. Fitting thousands of them through scikit-learn costs milliseconds each; here all units of a layer are
fitted at once with NumPy, following :class:`faceprobe.Probe` for one column: standardise on the training
set, unbiased class variance shrunk by ``reg_param`` towards 1, class priors from the training frequencies,
ties to the first class. (scikit-learn's QDA divides by n or n - 1 depending on its version, so the two can
disagree on samples right at the decision boundary.)

Beyond the thesis (multi-class and continuous targets, :mod:`faceprobe.targets`): a multi-class target's
1-D QDA is the same with one Gaussian per class, scored by balanced accuracy; a continuous target's single
unit is read by 1-D least squares, scored by R^2 and mean absolute error (:func:`single_unit_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["sample_by_vip", "single_unit_accuracies", "single_unit_scores"]


def single_unit_scores(
    kind: str, X_train: NDArray, y_train: NDArray, evals: Sequence[tuple[NDArray, NDArray]]
) -> list[dict[str, NDArray[np.float64]]]:
    """Each column of X probed alone, per (X, y) evaluation set: its scores by metric (results' ``metric``):
    accuracy (binary), balanced accuracy (multi-class) or R^2 and MAE (continuous)."""
    if kind == "continuous":
        return _single_unit_regressions(X_train, y_train, evals)
    metric = "balanced_accuracy" if kind == "multiclass" else "accuracy"
    scores = single_unit_accuracies(X_train, y_train, evals, balanced=kind == "multiclass")
    return [{metric: score} for score in scores]


def _single_unit_regressions(
    X_train: NDArray, y_train: NDArray, evals: Sequence[tuple[NDArray, NDArray]]
) -> list[dict[str, NDArray[np.float64]]]:
    """R^2 and MAE of each column read alone by least squares (``y ~ a + b x``), per evaluation set."""
    X_train = np.asarray(X_train, dtype=np.float64)
    y_train = np.asarray(y_train, dtype=np.float64)
    center, y_mean = X_train.mean(axis=0), y_train.mean()
    spread = ((X_train - center) ** 2).sum(axis=0)
    slope = np.divide(
        (X_train - center).T @ (y_train - y_mean), spread, out=np.zeros_like(spread), where=spread > 0
    )
    out = []
    for X, y in evals:
        y = np.asarray(y, dtype=np.float64)
        error = y[:, None] - (y_mean + (np.asarray(X, dtype=np.float64) - center) * slope)
        total = ((y - y.mean()) ** 2).sum()
        r2 = 1 - (error**2).sum(axis=0) / total if total > 0 else np.full(error.shape[1], np.nan)
        out.append({"r2": r2, "mae": np.abs(error).mean(axis=0)})
    return out


def single_unit_accuracies(
    X_train: NDArray,
    y_train: NDArray,
    evals: Sequence[tuple[NDArray, NDArray]],
    reg_param: float = 1e-3,
    balanced: bool = False,
) -> list[NDArray[np.float64]]:
    """Accuracy of each column of X probed alone (1-D QDA), for each (X, y) evaluation set; with
    ``balanced``, the balanced accuracy (mean recall over the classes present in y)."""
    X_train = np.asarray(X_train, dtype=np.float64)
    y_train = np.asarray(y_train)
    classes = np.unique(y_train)
    center = X_train.mean(axis=0)
    scale = X_train.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (X_train - center) / scale
    means, variances, log_priors = [], [], []
    for c in classes:
        Zc = Z[y_train == c]
        means.append(Zc.mean(axis=0))
        variances.append((1 - reg_param) * Zc.var(axis=0, ddof=1) + reg_param)
        log_priors.append(np.log(len(Zc) / len(Z)))
    mu, var, prior = np.array(means), np.array(variances), np.array(log_priors)[:, None]
    accuracies = []
    for X, y in evals:
        Zs = (np.asarray(X, dtype=np.float64) - center) / scale
        # log posterior up to a constant, per class: (classes, samples, units)
        score = prior[:, None, :] - 0.5 * (
            np.log(var)[:, None, :] + (Zs[None] - mu[:, None, :]) ** 2 / var[:, None, :]
        )
        predicted = classes[np.argmax(score, axis=0)]
        y = np.asarray(y)
        if not balanced:
            accuracies.append((predicted == y[:, None]).mean(axis=0))
            continue
        recalls = [(predicted[y == c] == c).mean(axis=0) for c in np.unique(y)]
        accuracies.append(np.mean(recalls, axis=0))
    return accuracies


def sample_by_vip(vip: NDArray, n: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """``n`` distinct neurons whose VIP scores are spread uniformly over the VIP range (thesis Fig. 5.9).

    Most neurons have small VIP, so sampling neurons uniformly would almost never pick a high-VIP one;
    instead VIP targets are drawn uniformly between the smallest and largest score and the nearest unused
    neuron is taken for each (among equal scores, the lowest index first).

    The walk runs on the sorted scores alone; only the neurons holding the picked scores are then ranked
    by index, instead of arg-sorting the whole layer (a stable argsort of every neuron cost more than the
    rest of a layer's unit study on wide layers).
    """
    vip = np.asarray(vip)
    n = min(n, vip.size)
    sorted_vip = np.sort(vip)
    taken = np.zeros(vip.size, dtype=bool)
    chosen = []
    for target in np.sort(rng.uniform(sorted_vip[0], sorted_vip[-1], size=n)):
        i = int(np.clip(np.searchsorted(sorted_vip, target), 0, vip.size - 1))
        lo, hi = i, i
        while taken[lo] and taken[hi]:  # walk outwards to the nearest free neuron
            lo, hi = max(lo - 1, 0), min(hi + 1, vip.size - 1)
        choice = (
            lo if not taken[lo] and (taken[hi] or target - sorted_vip[lo] <= sorted_vip[hi] - target) else hi
        )
        taken[choice] = True
        chosen.append(choice)
    positions = np.array(chosen, dtype=np.intp)
    values = np.unique(sorted_vip[positions])
    # The neurons holding a picked score, in the order of a stable argsort of every neuron: by score, then
    # by index; the k-th neuron of a score's run in that order is the k-th of the sorted run.
    holders = np.flatnonzero(values[np.clip(np.searchsorted(values, vip), 0, len(values) - 1)] == vip)
    holders = holders[np.argsort(vip[holders], kind="stable")]
    run_starts = np.searchsorted(vip[holders], sorted_vip[positions])
    return holders[run_starts + positions - np.searchsorted(sorted_vip, sorted_vip[positions])]
