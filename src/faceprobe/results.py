"""Result tables: tidy rows written as Parquet, atomically.

A run writes four tables into its folder (each a Parquet file, or a folder of Parquet part files):

* ``results.parquet``: one row per (model, layer, attribute, representation, unit, split). Its columns
  :data:`STABLE_COLUMNS` are a stable interface (scripts outside faceprobe read them): model, layer, depth,
  attribute, representation (``layer``, ``channels``, ``neurons``, ``channel``, ``neuron``), k, split
  (``val`` or ``test``), accuracy, n_train, n_eval. More columns: unit (channel or neuron index for
  single-unit rows, -1 otherwise), n_features, note (why a probe could not run), architecture, weights
  (origin: ``random``, ``imagenet``, ``checkpoint:...``), seed, kind (layer kind: conv, bn, relu, block,
  residual, pool, fc, embedding, other), variant (the model without its seed: models of one variant differ
  only in their seed, and views averaged over seeds group by it), epoch (the training epoch of a model from
  an ``epochs:DIR`` origin, -1 for every other model), metric (what ``accuracy`` holds: ``accuracy`` for a
  binary attribute, ``balanced_accuracy`` for a multi-class target, ``r2`` and ``mae`` for a continuous one,
  which has one row of each per probe and split; :mod:`faceprobe.targets`. Files written before the column
  existed hold accuracies only, and are read so), chance (what a probe that learned nothing scores in that
  metric: 0.5 for accuracy on the balanced draws, 1 / classes for balanced accuracy, 0 for R^2, and for MAE
  the mean predictor's, the train draw's mean for every image; NaN in files older than the column).

  ``model`` is the model entry's identity, unique in a run: its readable name (``name`` in the study file,
  else ARCHITECTURE/ORIGIN), a short digest of the architecture, weights file content, preprocessing and
  layers, and the seed, e.g. ``resnet50/imagenet#3fa2b1c0/s0``; ``variant`` is the same without ``/sSEED``.
* ``vip_study.parquet``: the VIP study (thesis Fig. 5.9): per (model, layer, attribute), neurons sampled
  uniformly over the VIP range, each with its VIP, its single-neuron validation accuracy and its mean
  activation on positive samples.
* ``ablation.parquet``: the ablation study (thesis Table 5.4): the top ``fraction`` of VIP neurons of
  ``ablated_layer`` zeroed, and the accuracy of each later layer's probes against the unablated baseline
  on the same ``split`` (val, and test where the run scores it).
* ``baseline.parquet``: the supervised multitask network's accuracy per attribute (the ceiling).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from faceprobe.atomic import atomic_path
from faceprobe.errors import FaceprobeError

__all__ = [
    "ABLATION_COLUMNS",
    "BASELINE_COLUMNS",
    "RESULT_COLUMNS",
    "STABLE_COLUMNS",
    "TABLES",
    "VIP_STUDY_COLUMNS",
    "read_baseline",
    "read_results",
    "to_frame",
    "write_results",
]

#: The columns of results.parquet that scripts outside faceprobe rely on; never renamed (add new ones freely).
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
    "architecture": "string",
    "weights": "string",
    "seed": "int64",
    "kind": "string",
    "variant": "string",
    "epoch": "int64",
    "metric": "string",
    "chance": "float64",
}

VIP_STUDY_COLUMNS: dict[str, str] = {
    "model": "string",
    "layer": "string",
    "depth": "int32",
    "attribute": "string",
    "neuron": "int64",
    "vip": "float64",
    "accuracy": "float64",
    "mean_positive": "float64",
    "n_train": "int32",
    "n_eval": "int32",
    "variant": "string",
    "metric": "string",
}

ABLATION_COLUMNS: dict[str, str] = {
    "model": "string",
    "ablated_layer": "string",
    "ablated_depth": "int32",
    "fraction": "float64",
    "n_ablated": "int64",
    "attribute": "string",
    "layer": "string",
    "depth": "int32",
    "representation": "string",
    "split": "string",
    "accuracy": "float64",
    "baseline_accuracy": "float64",
    "drop": "float64",
    "variant": "string",
}

BASELINE_COLUMNS: dict[str, str] = {
    "attribute": "string",
    "accuracy": "float64",
    "split": "string",
    "source": "string",
}

TABLES: dict[str, dict[str, str]] = {
    "results": RESULT_COLUMNS,
    "vip_study": VIP_STUDY_COLUMNS,
    "ablation": ABLATION_COLUMNS,
    "baseline": BASELINE_COLUMNS,
}
_DEFAULTS = {
    "unit": -1,
    "n_features": -1,
    "note": "",
    "architecture": "",
    "weights": "",
    "seed": 0,
    "kind": "",
    "variant": "",
    "epoch": -1,
    "metric": "accuracy",
    "chance": float("nan"),
}


def to_frame(rows: Iterable[dict], table: str = "results") -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with exactly the table's columns, in order, with their dtypes."""
    columns = TABLES[table]
    rows = list(rows)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(columns))  # no rows: the bare columns
    for column, default in _DEFAULTS.items():
        if column in columns and column not in frame:
            frame[column] = default
    missing = [c for c in columns if c not in frame]
    if missing:
        raise KeyError(f"{table} rows lack columns {missing}")
    return frame[list(columns)].astype(columns)


def write_results(rows: Iterable[dict] | pd.DataFrame, path: str | Path) -> Path:
    """Write rows to Parquet atomically: a crash leaves either the old file or the new one, never half.

    Raises:
        FaceprobeError: the disk (or quota) is full; ``path`` is left as it was.
    """
    path = Path(path)
    frame = rows if isinstance(rows, pd.DataFrame) else to_frame(rows)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results Parquet file (or a folder of Parquet parts) as a DataFrame."""
    return pd.read_parquet(path)


def read_baseline(path: str | Path) -> pd.DataFrame:
    """The multitask baseline table from ``path``: a baseline.parquet, or the folder holding one (the
    output folder of ``faceprobe train attributes``)."""
    path = Path(path)
    file = path / "baseline.parquet" if path.is_dir() else path
    if not file.exists():
        raise FaceprobeError(
            f"baseline {file} does not exist; give the baseline.parquet that faceprobe train attributes "
            "wrote, or its output folder"
        )
    try:
        frame = pd.read_parquet(file)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise FaceprobeError(
            f"baseline {file} cannot be read as Parquet ({type(err).__name__}: {err})"
        ) from None
    lacking = [c for c in BASELINE_COLUMNS if c not in frame]
    if lacking:
        raise FaceprobeError(
            f"baseline {file} lacks column(s) {', '.join(lacking)}; give a baseline.parquet written by "
            "faceprobe train attributes"
        )
    return to_frame(frame.to_dict("records"), "baseline")
