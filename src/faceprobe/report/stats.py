"""How sure a number of the report is: 95% intervals for accuracies and correlations.

An accuracy measured on n images is a binomial proportion; with 64 images a gap of 10 points is within
noise. The report shows the Wilson score interval (it stays inside [0, 1] and keeps its coverage near 0 and
1, where the plain ``p ± 1.96 sqrt(p(1-p)/n)`` fails), and greys out rows measured on fewer than
:data:`MIN_EVAL` images. A Pearson r over n neurons gets the Fisher z interval.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MIN_EVAL",
    "Z95",
    "difference_interval",
    "fisher_interval",
    "mean_r_interval",
    "too_few",
    "wilson_interval",
]

#: The standard normal quantile of a two-sided 95% interval.
Z95 = 1.959963984540054
#: Below this many evaluation images the 95% interval of an accuracy near chance is about ±10 points or
#: wider (±9.7 at 99 images, ±12 at 64): such rows are shown grey, too small to read a difference from.
MIN_EVAL = 100


def wilson_interval(accuracy: ArrayLike, n: ArrayLike, z: float = Z95) -> tuple[NDArray, NDArray]:
    """The Wilson score interval of proportions ``accuracy`` measured on ``n`` trials (arrays broadcast).

    NaN where the accuracy is NaN or ``n`` is not positive.
    """
    p = np.asarray(accuracy, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
        bad = ~(n > 0) | np.isnan(p)
        low = np.where(bad, np.nan, np.clip(centre - half, 0.0, 1.0))
        high = np.where(bad, np.nan, np.clip(centre + half, 0.0, 1.0))
    return low, high


def difference_interval(
    p1: ArrayLike, n1: ArrayLike, p2: ArrayLike, n2: ArrayLike, z: float = Z95
) -> tuple[NDArray, NDArray]:
    """The 95% interval of ``p1 - p2``, two proportions measured on independent images (``n1``, ``n2``).

    Newcombe's hybrid score interval (method 10 of Newcombe 1998): each proportion's Wilson bounds combined,
    so it keeps the Wilson interval's coverage near 0 and 1. Used for selectivity, an accuracy less the
    random-label control's accuracy, each scored on its own draw.
    """
    p1, p2 = np.asarray(p1, dtype=float), np.asarray(p2, dtype=float)
    l1, u1 = wilson_interval(p1, n1, z)
    l2, u2 = wilson_interval(p2, n2, z)
    d = p1 - p2
    return d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def too_few(n: ArrayLike) -> NDArray[np.bool_]:
    """Whether ``n`` evaluation images are too few to read an accuracy difference from."""
    return np.asarray(n, dtype=float) < MIN_EVAL


def fisher_interval(r: ArrayLike, n: ArrayLike, z: float = Z95) -> tuple[NDArray, NDArray]:
    """The 95% interval of Pearson correlations ``r`` over ``n`` pairs: ``tanh(atanh(r) ± z / sqrt(n - 3))``.

    NaN where r is NaN or ``n < 4`` (no interval is defined).
    """
    r = np.asarray(r, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
        half = z / np.sqrt(n - 3)
        bad = ~(n > 3) | np.isnan(r)
        low = np.where(bad, np.nan, np.tanh(centre - half))
        high = np.where(bad, np.nan, np.tanh(centre + half))
    return low, high


def mean_r_interval(r: ArrayLike, n: ArrayLike) -> tuple[float, float]:
    """The 95% interval of a mean of per-projection correlations ``r`` (each over ``n`` neurons).

    Projections differ more from each other than their sampling alone explains, so with several the
    interval comes from their spread: the mean of their Fisher z ± t(0.975, k-1) times its standard error,
    transformed back. With one projection it is that projection's own Fisher interval.
    """
    r = np.asarray(r, dtype=float)
    n = np.asarray(n, dtype=float)
    keep = ~np.isnan(r)
    r, n = r[keep], n[keep]
    if len(r) == 0:
        return np.nan, np.nan
    if len(r) == 1:
        low, high = fisher_interval(r[0], n[0])
        return float(low), float(high)
    from scipy.stats import t

    zs = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
    half = t.ppf(0.975, len(zs) - 1) * zs.std(ddof=1) / np.sqrt(len(zs))
    return float(np.tanh(zs.mean() - half)), float(np.tanh(zs.mean() + half))
