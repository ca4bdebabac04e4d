"""Activations and labels from plain files, for probing arrays computed elsewhere.

Arrays are memory-mapped (``.npy`` only, never pickles), so a layer larger than RAM is read block by block
by :class:`faceprobe.PLS` instead of being loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from faceprobe.errors import DataError

__all__ = ["load_features", "load_labels"]

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "-1", "false", "no", "n", "f"}


def load_features(path: str | Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """Memory-map a ``.npy`` array of shape (samples, ...) as (samples x features) plus one sample's shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a .npy array written by numpy.save")
    _check_npy(path)
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        raise DataError(f"{path}: holds Python objects, not numbers; save float32 activations") from None
    if X.dtype.kind not in "fiub":
        raise DataError(f"{path}: dtype {X.dtype} is not numeric; save float32 activations")
    if X.ndim < 2:
        raise DataError(f"{path}: shape {X.shape}; activations need one row per sample (samples x features)")
    return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])


def load_labels(path: str | Path, expected: int | None = None) -> NDArray[np.int8]:
    """Binary labels as 0/1 from a ``.npy`` file or a text file with one value per line.

    Accepted values: -1/1, 0/1, true/false (also yes/no). Anything else is an error naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give one label per sample (.npy or text, one per line)")
    if path.suffix == ".npy":
        _check_npy(path)
        try:
            raw = np.load(path, allow_pickle=False).ravel()
        except ValueError:
            raise DataError(f"{path}: holds Python objects; save the labels as numbers") from None
        values = [str(v).strip().lower() for v in (raw.astype(int) if raw.dtype.kind in "fb" else raw)]
        lines = range(1, len(values) + 1)
    else:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        pairs = [(i, line.strip().lower()) for i, line in enumerate(text, start=1) if line.strip()]
        lines, values = [i for i, _ in pairs], [v for _, v in pairs]
    labels = np.empty(len(values), dtype=np.int8)
    for k, (line, value) in enumerate(zip(lines, values, strict=True)):
        if value in _TRUE:
            labels[k] = 1
        elif value in _FALSE:
            labels[k] = 0
        else:
            raise DataError(f"{path}:{line}: label {value!r} is not binary; use -1/1, 0/1 or true/false")
    if expected is not None and len(labels) != expected:
        raise DataError(
            f"{path}: {len(labels)} labels for {expected} samples; give exactly one label per sample"
        )
    return labels


def _check_npy(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file; write it with numpy.save")
