"""Activations and labels from plain files, for probing arrays computed elsewhere.

Arrays are memory-mapped (``.npy`` only, never pickles), so a layer larger than RAM is read block by block
by :class:`faceprobe.PLS` instead of being loaded. A big-endian array (written on another machine) is the
exception: numpy cannot map it in native byte order, so it is converted in memory.
"""

from __future__ import annotations

import codecs
import math
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format
from numpy.typing import NDArray

from faceprobe.errors import DataError

__all__ = ["load_features", "load_labels"]

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "-1", "false", "no", "n", "f"}
_HOW = "use -1/1, 0/1 or true/false"


def load_features(path: str | Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """Memory-map a ``.npy`` array of shape (samples, ...) as (samples x features) plus one sample's shape."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a .npy array written by numpy.save")
    _check_npy(path, "save float32 activations")
    X = np.load(path, mmap_mode="r", allow_pickle=False)
    if X.dtype.kind not in "fiub":
        raise DataError(f"{path}: dtype {X.dtype} cannot be probed; save float32 activations")
    if X.ndim < 2:
        raise DataError(f"{path}: shape {X.shape}; activations need one row per sample (samples x features)")
    if X.shape[0] == 0 or math.prod(X.shape[1:]) == 0:
        what = "no rows" if X.shape[0] == 0 else "no features"
        raise DataError(f"{path}: shape {X.shape} has {what}; save one row of activations per sample")
    if not X.dtype.isnative:  # e.g. '>f4' from another machine: numpy maps it only in its own byte order
        X = np.ascontiguousarray(X, dtype=X.dtype.newbyteorder("="))
    return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])


def load_labels(path: str | Path, expected: int | None = None) -> NDArray[np.int8]:
    """Binary labels as 0/1 from a ``.npy`` file or a text file with one value per line.

    Accepted values: -1/1, 0/1, true/false (also yes/no; in text, ``1.0`` and the like as numpy.savetxt
    writes them). Both classes must occur, and -1, 0 and 1 never together. Anything else is an error naming
    the file and, where it can, the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give one label per sample (.npy or text, one per line)")
    if path.suffix == ".npy":
        labels = _npy_labels(path)
    else:
        labels = _text_labels(path)
    if expected is not None and len(labels) != expected:
        raise DataError(
            f"{path}: {len(labels)} labels for {expected} samples; give exactly one label per sample"
        )
    if len(labels) and (labels == labels[0]).all():
        raise DataError(
            f"{path}: all {len(labels)} labels are {'positive' if labels[0] else 'negative'}; "
            "a probe needs both classes"
        )
    return labels


def _npy_labels(path: Path) -> NDArray[np.int8]:
    _check_npy(path, "save the labels as numbers")
    raw = np.load(path, allow_pickle=False)
    if raw.ndim != 1 and not (raw.ndim == 2 and raw.shape[1] == 1):
        raise DataError(f"{path}: shape {raw.shape}; give one label per sample, a 1-d array")
    raw = raw.ravel()
    if raw.dtype.kind == "b":
        return raw.astype(np.int8)
    if raw.dtype.kind in "US":  # text labels saved with numpy: read as a text file is
        values = [str(v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for v in raw]
        return _tokens(path, values, range(1, len(values) + 1), "row")
    if raw.dtype.kind not in "iuf":
        raise DataError(f"{path}: dtype {raw.dtype} is not a label type; save the labels as 0/1 integers")
    numbers = raw.astype(np.float64)
    bad = ~np.isin(numbers, (-1.0, 0.0, 1.0))  # also NaN, inf and fractions such as 0.3
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{path}: row {row + 1} is {raw[row].item()!r}, which is not a binary label; {_HOW}")
    _check_one_spelling(path, numbers == -1, numbers == 0)
    return (numbers > 0).astype(np.int8)


def _text_labels(path: Path) -> NDArray[np.int8]:
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise DataError(f"{path}: is UTF-16 or binary, not UTF-8 text; save it as UTF-8, one label per line")
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff").splitlines()
    pairs = [(i, line.strip()) for i, line in enumerate(text, start=1) if line.strip()]
    return _tokens(path, [v for _, v in pairs], [i for i, _ in pairs], "line")


def _tokens(path: Path, values: list[str], lines: list[int] | range, where: str) -> NDArray[np.int8]:
    """``values`` (text) as 0/1; ``lines`` number them for the error message."""
    labels = np.empty(len(values), dtype=np.int8)
    minus = np.zeros(len(values), dtype=bool)
    zero = np.zeros(len(values), dtype=bool)
    for k, (line, value) in enumerate(zip(lines, values, strict=True)):
        token = value.strip().lower()
        number = _number(token)
        if token in _TRUE or number == 1:
            labels[k] = 1
        elif token in _FALSE or number in (0, -1):
            labels[k] = 0
            minus[k], zero[k] = number == -1, number == 0
        else:
            place = f"{path}:{line}" if where == "line" else f"{path}: {where} {line}"
            raise DataError(f"{place}: label {value[:40]!r} is not binary; {_HOW}")
    _check_one_spelling(path, minus, zero)
    return labels


def _number(token: str) -> float | None:
    """The value of a numeric token (``1.0``, ``-1.000000000000000000e+00``), else None."""
    try:
        return float(token)
    except ValueError:
        return None


def _check_one_spelling(path: Path, minus: np.ndarray, zero: np.ndarray) -> None:
    """-1 and 0 together would merge two classes into "negative": refuse instead of guessing."""
    if minus.any() and zero.any():
        raise DataError(
            f"{path}: labels mix -1 and 0 (rows {int(np.argmax(minus)) + 1} and {int(np.argmax(zero)) + 1}), "
            "that is three classes; use -1/1 or 0/1 throughout"
        )


def _check_npy(path: Path, fix: str) -> None:
    """Refuse anything but a whole ``.npy`` file of plain values, naming what is wrong with it."""
    with path.open("rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file; write it with numpy.save")
        f.seek(0)
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, _, dtype = npy_format.read_array_header_2_0(f)
        except (ValueError, EOFError, SyntaxError, TypeError, OverflowError):
            raise DataError(
                f"{path}: the .npy header is corrupt or cut short; write the file again"
            ) from None
        start = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects, not numbers; {fix}")
    needed = math.prod(shape) * dtype.itemsize
    found = path.stat().st_size - start
    if found < needed:
        raise DataError(
            f"{path}: truncated: its header announces {shape} {dtype} ({needed} bytes) but only "
            f"{found} bytes follow; the file is incomplete or corrupt, write it again"
        )
