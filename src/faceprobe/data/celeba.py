"""Read a dataset in CelebA's published layout: real CelebA, a sample of it, or faceprobe's synthetic faces.

The layout is ``img_align_celeba/`` beside three text files: ``list_attr_celeba.txt`` (a count, the attribute
names, then one row of -1/1 values per image), ``identity_CelebA.txt`` and ``list_eval_partition.txt`` (one
``image value`` pair per line). pandas parses them, so the 202,599 rows of CelebA load in well under a
second; when something is off, the file is scanned line by line so the error can name the line to fix.
Kaggle's edition is read too: ``list_attr_celeba.csv`` (-1/1 or 0/1, an ``image_id`` column),
``list_eval_partition.csv``, no identity file, images nested in ``img_align_celeba/img_align_celeba/``.
Synthetic faces add ``targets.csv`` (targets beyond binary), read as targets a study uses where it names
them (:attr:`FaceDataset.named_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import link_problem
from faceprobe.data.tables import (
    binary_columns,
    check_text_file,
    data_lines,
    label_columns,
    line_of_row,
    read_table,
    unique_ids,
)
from faceprobe.errors import DataError

__all__ = [
    "ATTRIBUTE_FILE",
    "IDENTITY_FILE",
    "IMAGE_DIR",
    "PARTITION_FILE",
    "CelebA",
    "celeba_dataset",
    "load_celeba",
]

IMAGE_DIR = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
IDENTITY_FILE = "identity_CelebA.txt"
PARTITION_FILE = "list_eval_partition.txt"
TARGET_FILE = "targets.csv"  # synthetic faces only: their targets beyond binary

_LAYOUT = f"{IMAGE_DIR}/, {ATTRIBUTE_FILE}, {IDENTITY_FILE}, {PARTITION_FILE}, or the .csv variants"


@dataclass(frozen=True)
class CelebA:
    """A dataset in CelebA's layout, all tables indexed by image file name (``'000001.jpg'``).

    ``attributes`` holds 0/1 ``int8`` labels and may cover only some images (as in a sample of CelebA);
    ``identities`` and ``partitions`` (0 train, 1 val, 2 test) cover every image listed.
    """

    root: Path
    image_dir: Path
    attributes: pd.DataFrame
    identities: pd.Series
    partitions: pd.Series

    @property
    def attribute_names(self) -> list[str]:
        return list(self.attributes.columns)

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / image_id


def load_celeba(root: str | Path) -> CelebA:
    """Load the labels of the CelebA-layout dataset in ``root``; images are read later, by path."""
    root = Path(root)
    image_dir, attributes, identities, partitions = _read_layout(root, need_identities=True)
    assert identities is not None  # _read_layout raised otherwise
    return CelebA(root, image_dir, attributes, identities, partitions)


def celeba_dataset(root: str | Path, kind: str = "celeba", skip_bad_images: bool = False) -> FaceDataset:
    """CelebA (or a sample, or synthetic faces) as a :class:`FaceDataset`; the identity file is optional,
    as Kaggle's CSV edition lacks it, and every listed image must exist (or is skipped and recorded).
    Synthetic faces' ``targets.csv``, when there, gives the dataset's :attr:`FaceDataset.named_targets`."""
    root = Path(root)
    image_dir, attributes, identities, partitions = _read_layout(root, need_identities=False)
    targets = root / TARGET_FILE
    dataset = FaceDataset(
        kind,
        root,
        image_dir,
        partitions.index,
        attributes=attributes,
        identities=identities,
        partitions=partitions,
        skip_bad_images=skip_bad_images,
        named_targets=_read_targets(targets, image_dir) if kind == "synthetic" and targets.exists() else None,
    )
    return dataset.check_files()


def _read_targets(path: Path, image_dir: Path) -> pd.DataFrame:
    """The target columns of a synthetic ``targets.csv`` (ids relative to the folder above the images),
    indexed as the attribute table is; its identity and partition repeat the CelebA files'."""
    table = read_table(path)
    ids = unique_ids(path, table, "image_id").str.removeprefix(f"{image_dir.name}/")
    targets = table.drop(columns=["image_id", "identity", "partition"], errors="ignore")
    return label_columns(path, targets).set_axis(pd.Index(ids, name="image"))


def _read_layout(root: Path, need_identities: bool) -> tuple[Path, pd.DataFrame, pd.Series | None, pd.Series]:
    """The image folder and the label tables, each from its .txt file or else its .csv variant."""
    image_dir = root / IMAGE_DIR
    if (image_dir / IMAGE_DIR).is_dir():  # Kaggle's edition nests the folder in one of the same name
        image_dir = image_dir / IMAGE_DIR
    attribute_path = _either(root, ATTRIBUTE_FILE)
    partition_path = _either(root, PARTITION_FILE)
    identity_path = root / IDENTITY_FILE
    required = [image_dir, attribute_path, partition_path] + ([identity_path] if need_identities else [])
    for path in required:
        if not path.exists():
            raise DataError(
                link_problem(path)
                or f"{path} not found; {root} must be in CelebA's published layout ({_LAYOUT})"
            )
    if attribute_path.suffix == ".csv":
        table = read_table(attribute_path)
        ids = unique_ids(attribute_path, table, table.columns[0])
        attributes = binary_columns(attribute_path, table.drop(columns=table.columns[0])).set_axis(ids)
    else:
        attributes = _read_attributes(attribute_path)
    if partition_path.suffix == ".csv":
        table = read_table(partition_path)
        partition_images = unique_ids(partition_path, table, table.columns[0])
        column = table.iloc[:, -1]
        if not column.isin(["0", "1", "2"]).all():
            row = int(np.argmax(~column.isin(["0", "1", "2"]).to_numpy()))
            raise DataError(
                f"{partition_path}:{line_of_row(partition_path, 1, row)}: partition is {column.iloc[row]!r}, "
                "but must be 0, 1 or 2; fix the value"
            )
        values = column.to_numpy(dtype=np.int64)[:, None]
    else:
        partition_images, values = _read_rows(partition_path, 0, 1)
        _check_values(partition_path, 0, values, ["partition"], (0, 1, 2), "0, 1 or 2")
    partitions = pd.Series(values[:, 0].astype(np.int8), index=partition_images, name="partition")
    identities = None
    if identity_path.exists():
        images, numbers = _read_rows(identity_path, 0, 1)
        identities = pd.Series(numbers[:, 0], index=images, name="identity")
        _require_listed(attribute_path, attributes.index, identity_path, images)
        _require_listed(identity_path, images, partition_path, partition_images)
    _require_listed(attribute_path, attributes.index, partition_path, partition_images)
    return image_dir, attributes, identities, partitions


def _either(root: Path, name: str) -> Path:
    """``root / name``, or its .csv variant when only that exists."""
    path = root / name
    variant = path.with_suffix(".csv")
    return variant if not path.exists() and variant.exists() else path


def _read_attributes(path: Path) -> pd.DataFrame:
    check_text_file(path, f"CelebA's {path.name}")
    with open(path, encoding="utf-8", errors="replace") as f:  # any bytes: the checks below name the bad line
        count, header = f.readline(), f.readline()
    if not count.strip().isdigit():
        raise DataError(
            f"{path}:1: expected the number of images, found {count.strip()[:40]!r}; "
            "the file must start with CelebA's two header lines"
        )
    names = header.split()
    if not names or any(name.lstrip("-").isdigit() or name.endswith(".jpg") for name in names):
        raise DataError(
            f"{path}:2: expected the attribute names, found {header.strip()[:40]!r}; "
            "the file must start with CelebA's two header lines"
        )
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise DataError(f"{path}:2: attribute {twice} is named twice; each column needs its own name")
    # The first line's count is not checked against the rows: samples of CelebA keep the published count.
    images, values = _read_rows(path, 2, len(names))
    if (values == -1).any():
        _check_values(path, 2, values, names, (-1, 1), "-1 or 1")
    else:
        _check_values(path, 2, values, names, (0, 1), "-1/1 or 0/1")
    return pd.DataFrame((values > 0).astype(np.int8), index=images, columns=names)


def _read_rows(path: Path, header_lines: int, n_values: int) -> tuple[pd.Index, np.ndarray]:
    """The image names and integer values of the rows ``image value ...`` after ``header_lines`` lines."""
    columns = list(range(1, n_values + 1))
    check_text_file(path, f"CelebA's {path.name}")
    if next(data_lines(path, header_lines), None) is None:
        what = "has its header lines but no rows" if header_lines else "is empty"
        raise DataError(f"{path}: {what}; it needs one line 'image value ...' per image")
    try:
        frame = pd.read_csv(
            path,
            sep=r"\s+",
            header=None,
            skiprows=header_lines,
            names=[0, *columns],
            dtype={0: str},
            engine="c",
        )
    except ValueError:  # pandas' ParserError, or undecodable bytes
        _raise_at_bad_line(path, header_lines, n_values)
    # A first row with extra fields turns into an index; short rows give NaN (float); text gives strings.
    well_formed = isinstance(frame.index, pd.RangeIndex) and all(
        pd.api.types.is_integer_dtype(frame[column]) for column in columns
    )
    if len(frame) and not well_formed:
        _raise_at_bad_line(path, header_lines, n_values)
    images = pd.Index(frame[0], name="image")
    if not images.is_unique:
        row = int(np.argmax(images.duplicated()))
        raise DataError(
            f"{path}:{line_of_row(path, header_lines, row)}: image {images[row]} is listed twice; "
            "keep one line per image"
        )
    return images, frame[columns].to_numpy(dtype=np.int64)


def _raise_at_bad_line(path: Path, header_lines: int, n_values: int) -> NoReturn:
    for number, fields in data_lines(path, header_lines):
        if len(fields) != n_values + 1:
            cut = " (the row is truncated)" if len(fields) < n_values + 1 else ""
            raise DataError(
                f"{path}:{number}: expected an image name and {n_values} values, found "
                f"{len(fields) - 1}{cut}; fix or remove the line, or re-download the file"
            )
        bad = next((field for field in fields[1:] if not field.lstrip("-").isdigit()), None)
        if bad is not None:
            raise DataError(f"{path}:{number}: {bad[:20]!r} is not an integer; fix or remove the line")
    raise DataError(f"{path}: cannot be parsed as CelebA rows of 'image value ...'; check the file's format")


def _check_values(
    path: Path,
    header_lines: int,
    values: np.ndarray,
    columns: Sequence[str],
    allowed: Sequence[int],
    what: str,
) -> None:
    bad = np.ones(values.shape, dtype=bool)
    for value in allowed:
        bad &= values != value
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(
            f"{path}:{line_of_row(path, header_lines, int(row))}: {columns[column]} is "
            f"{values[row, column]}, but must be {what}; fix the value"
        )


def _require_listed(path: Path, images: pd.Index, other_path: Path, other: pd.Index) -> None:
    missing = images.difference(other)
    if len(missing):
        more = f" and {len(missing) - 1} more images" if len(missing) > 1 else ""
        raise DataError(
            f"{path} lists {missing[0]}{more} that {other_path.name} lacks; "
            "both files must come from the same dataset"
        )
