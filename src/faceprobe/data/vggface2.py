"""Read VGGFace2 in its published layout: ``train/`` and ``test/`` folders of identity folders.

Images are ``train/n000002/0001_01.jpg``; their id is that path. The optional loose bounding boxes
(``bb_landmark/loose_bb_train.csv``, ``NAME_ID,X,Y,W,H`` with ``NAME_ID`` like ``n000002/0001_01``) become
:attr:`FaceDataset.boxes`, and :meth:`FaceDataset.open_image` crops to them, as VGGFace2's protocol does
before resizing. VGGFace2 has no attribute labels; its train and test identities are disjoint and become
partitions 0 and 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import link_problem, person_folders
from faceprobe.data.tables import line_of_row, read_table, unique_ids
from faceprobe.errors import DataError

__all__ = ["SPLITS", "load_vggface2"]

SPLITS = {"train": 0, "test": 2}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_BOX_COLUMNS = ["X", "Y", "W", "H"]


def load_vggface2(root: str | Path, skip_bad_images: bool = False) -> FaceDataset:
    """VGGFace2 (or part of it) in ``root``: images, identities, partitions and, when present, loose boxes."""
    root = Path(root)
    for split in SPLITS:
        if problem := link_problem(root / split):
            raise DataError(problem)
    splits = [split for split in SPLITS if (root / split).is_dir()]
    if not splits:
        raise DataError(
            f"{root}: no train/ or test/ folder; VGGFace2's layout is train/n000002/0001_01.jpg (test/ alike)"
        )
    ids, names, partitions = [], [], []
    for split in splits:
        for name, files in person_folders(root / split, IMAGE_SUFFIXES):
            ids.extend(f"{split}/{name}/{f}" for f in files)
            names.extend([name] * len(files))
            partitions.extend([SPLITS[split]] * len(files))
    if not ids:
        raise DataError(f"{root}: no images in {' or '.join(f'{s}/' for s in splits)}; the folders are empty")
    index = pd.Index(ids, name="image")
    codes, _ = pd.factorize(pd.Series(names), sort=True)
    boxes = [_read_boxes(path, split) for split in splits if (path := _box_file(root, split)) is not None]
    return FaceDataset(
        "vggface2",
        root,
        root,
        index,
        identities=pd.Series(codes.astype(np.int64), index=index, name="identity"),
        partitions=pd.Series(np.asarray(partitions, dtype=np.int8), index=index, name="partition"),
        boxes=pd.concat(boxes).reindex(index).dropna().astype(np.int64) if boxes else None,
        skip_bad_images=skip_bad_images,
    )


def _box_file(root: Path, split: str) -> Path | None:
    name = f"loose_bb_{split}.csv"
    return next((p for p in (root / "bb_landmark" / name, root / name) if p.is_file()), None)


def _read_boxes(path: Path, split: str) -> pd.DataFrame:
    table = read_table(path)
    missing = [c for c in ["NAME_ID", *_BOX_COLUMNS] if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}:1: the header lacks {', '.join(missing)}; VGGFace2's box files have NAME_ID,X,Y,W,H"
        )
    names = unique_ids(path, table, "NAME_ID")
    values = table[_BOX_COLUMNS].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1).to_numpy() | (values[["W", "H"]] <= 0).any(axis=1).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        box = ",".join(table[_BOX_COLUMNS].iloc[row])
        raise DataError(
            f"{path}:{line_of_row(path, 1, row)}: the box {box} is not four "
            "numbers with a positive width and height; fix or remove the line"
        )
    boxes = values.round().astype(np.int64).set_axis(["left", "top", "width", "height"], axis=1)
    return boxes.set_axis(pd.Index([f"{split}/{name}.jpg" for name in names], name="image"))
