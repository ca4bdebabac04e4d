"""Your own labelled faces: an image folder and a CSV or TSV table with one row per image.

The table has an id column (``image_id``, ``image``, ``file``, ``filename``, ``path``, ...; else its first
column) holding each image's path relative to the folder, and label columns: binary attributes written
-1/1, 0/1 or true/false (or any two values), multi-class ones (at most 20 whole numbers or texts) and
continuous ones (numbers), each column's kind read from its values (:mod:`faceprobe.targets`; an empty cell
of a multi-class or continuous column is a missing label). Two optional columns are read as such rather
than as attributes: ``identity`` (any labels, one per person) and ``partition`` or ``split`` (0/1/2 or
train/val/test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import link_problem
from faceprobe.data.tables import id_column, label_columns, line_of_row, read_table, unique_ids
from faceprobe.errors import DataError

__all__ = ["load_folder"]

_PARTITIONS = {"0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def load_folder(images: str | Path, labels: str | Path, skip_bad_images: bool = False) -> FaceDataset:
    """The images in ``images`` labelled by the table ``labels``; every listed image must exist."""
    images, labels = Path(images), Path(labels)
    if not images.is_dir():
        raise DataError(
            link_problem(images) or f"{images} is not a folder; give the folder that holds the images"
        )
    table = read_table(labels)
    column = id_column(table)
    ids = unique_ids(labels, table, column)
    table = table.drop(columns=column)
    special = {c.lower(): c for c in table.columns if c.lower() in ("identity", "partition", "split")}
    if "split" in special:
        special.setdefault("partition", special.pop("split"))
    identities = partitions = None
    if "identity" in special:
        codes, _ = pd.factorize(table.pop(special["identity"]), sort=True)
        identities = pd.Series(codes.astype(np.int64), index=ids, name="identity")
    if "partition" in special:
        partitions = pd.Series(
            _partitions(labels, table.pop(special["partition"])), index=ids, name="partition"
        )
    if table.columns.empty:
        raise DataError(f"{labels}:1: no attribute columns; add binary columns (-1/1, 0/1 or true/false)")
    attributes = label_columns(labels, table).set_axis(ids)
    dataset = FaceDataset(
        "folder",
        labels,
        images,
        ids,
        attributes=attributes,
        identities=identities,
        partitions=partitions,
        skip_bad_images=skip_bad_images,
    )
    return dataset.check_files()


def _partitions(path: Path, column: pd.Series) -> np.ndarray:
    values = column.str.lower().map(_PARTITIONS)
    if values.isna().any():
        row = int(np.argmax(values.isna().to_numpy()))
        raise DataError(
            f"{path}:{line_of_row(path, 1, row)}: partition is {column.iloc[row]!r}, but must be "
            "0/1/2 or train/val/test; fix the value"
        )
    return values.to_numpy(dtype=np.int8)
