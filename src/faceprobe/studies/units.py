"""Single-unit probes, vectorised, and the VIP study's sampling of neurons.

A single neuron is a one-dimensional input, so its QDA probe has a closed form: two Gaussians, one per
class. Fitting thousands of them through scikit-learn costs milliseconds each; here all units of a layer are
fitted at once with NumPy, following :class:`faceprobe.Probe` for one column: standardise on the training
set, unbiased class variance shrunk by ``reg_param`` towards 1, class priors from the training frequencies,
ties to the first class. (scikit-learn's QDA divides by n or n - 1 depending on its version, so the two can
disagree on samples right at the decision boundary.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["sample_by_vip", "single_unit_accuracies"]


def single_unit_accuracies(
    X_train: NDArray, y_train: NDArray, evals: Sequence[tuple[NDArray, NDArray]], reg_param: float = 1e-3
) -> list[NDArray[np.float64]]:
    """Accuracy of each column of X probed alone (1-D QDA), for each (X, y) evaluation set."""
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
        accuracies.append((predicted == np.asarray(y)[:, None]).mean(axis=0))
    return accuracies


def sample_by_vip(vip: NDArray, n: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """``n`` distinct neurons whose VIP scores are spread uniformly over the VIP range (thesis Fig. 5.9).

    Most neurons have small VIP, so sampling neurons uniformly would almost never pick a high-VIP one;
    instead VIP targets are drawn uniformly between the smallest and largest score and the nearest unused
    neuron is taken for each.
    """
    vip = np.asarray(vip)
    n = min(n, vip.size)
    order = np.argsort(vip, kind="stable")
    sorted_vip = vip[order]
    taken = np.zeros(vip.size, dtype=bool)
    picked = []
    for target in np.sort(rng.uniform(sorted_vip[0], sorted_vip[-1], size=n)):
        i = int(np.clip(np.searchsorted(sorted_vip, target), 0, vip.size - 1))
        lo, hi = i, i
        while taken[lo] and taken[hi]:  # walk outwards to the nearest free neuron
            lo, hi = max(lo - 1, 0), min(hi + 1, vip.size - 1)
        choice = (
            lo if not taken[lo] and (taken[hi] or target - sorted_vip[lo] <= sorted_vip[hi] - target) else hi
        )
        taken[choice] = True
        picked.append(order[choice])
    return np.array(picked, dtype=np.intp)
