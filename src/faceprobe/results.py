"""Result tables: tidy rows written as Parquet, atomically.

``results.parquet`` holds one row per (model, layer, attribute, representation, unit, split). Its columns are
a stable interface (scripts outside faceprobe read them): model, layer, depth, attribute, representation
(``layer``, ``channels``, ``neurons``, ``channel``, ``neuron``), k, split, accuracy, n_train, n_eval; plus
unit (the channel or neuron index for single-unit rows, -1 otherwise), n_features and note.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

__all__ = ["RESULT_COLUMNS", "STABLE_COLUMNS", "read_results", "to_frame", "write_results"]

#: The columns scripts outside faceprobe rely on; never renamed (add new ones freely).
STABLE_COLUMNS = (
    "model",
    "layer",
    "depth",
    "attribute",
    "representation",
    "k",
    "split",
    "accuracy",
    "n_train",
    "n_eval",
)

RESULT_COLUMNS: dict[str, str] = {
    "model": "string",
    "layer": "string",
    "depth": "int32",
    "attribute": "string",
    "representation": "string",
    "k": "int32",
    "unit": "int64",
    "split": "string",
    "accuracy": "float64",
    "n_train": "int32",
    "n_eval": "int32",
    "n_features": "int64",
    "note": "string",
}
_DEFAULTS = {"unit": -1, "n_features": -1, "note": ""}


def to_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with exactly the result columns, in order, with their dtypes."""
    frame = pd.DataFrame(list(rows))
    for column, default in _DEFAULTS.items():
        if column not in frame:
            frame[column] = default
    missing = [c for c in RESULT_COLUMNS if c not in frame]
    if missing:
        raise KeyError(f"result rows lack columns {missing}")
    return frame[list(RESULT_COLUMNS)].astype(RESULT_COLUMNS)


def write_results(rows: Iterable[dict] | pd.DataFrame, path: str | Path) -> Path:
    """Write rows to Parquet atomically: a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    frame = rows if isinstance(rows, pd.DataFrame) else to_frame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results Parquet file (or a folder of Parquet parts) as a DataFrame."""
    return pd.read_parquet(path)
