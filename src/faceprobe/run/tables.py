"""Reading a run folder's tables: the one reader faceprobe's commands and a user's scripts go through."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from faceprobe.errors import FaceprobeError
from faceprobe.results import TABLES, to_frame

__all__ = ["read_table"]

#: Row order of every table: by model, depth, then the finer keys, so equal runs give equal frames.
_ORDER = (
    "model",
    "depth",
    "ablated_depth",
    "fraction",
    "attribute",
    "representation",
    "unit",
    "split",
    "neuron",
)


def read_table(run_dir: str | Path, name: str = "results") -> pd.DataFrame:
    """The table ``name`` of the run folder ``run_dir`` as one DataFrame, rows in a stable order.

    ``name`` is one of results, vip_study, ablation, baseline (:data:`faceprobe.results.TABLES`); a study
    the run did not do gives an empty frame with the table's columns.

    Raises:
        FaceprobeError: ``run_dir`` is no run folder, or ``name`` no table (the message lists them).
    """
    run_dir = Path(run_dir)
    if name not in TABLES:
        raise FaceprobeError(f"no table {name!r} in a run; tables: {', '.join(TABLES)}")
    if not (run_dir / "manifest.json").is_file():
        raise FaceprobeError(f"{run_dir} is not a faceprobe run folder (no manifest.json); give a run folder")
    path = run_dir / f"{name}.parquet"
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        return to_frame([], name)
    frame = pd.read_parquet(path)
    keys = [c for c in _ORDER if c in frame]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)
