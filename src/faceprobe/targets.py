"""Kinds of targets: binary attributes (the thesis), multi-class and continuous ones (beyond it, on purpose).

The thesis probes binary attributes only; its section on future work names multi-class and regression
targets (pose, for instance), reached by swapping the classifier. A target's kind travels with its labels,
as the dtype of its column in the label table (:attr:`faceprobe.data.dataset.FaceDataset.attributes`, the
run's ``labels.parquet``), so no second table can disagree with it:

* **binary**: ``int8`` 0/1, probed by :class:`faceprobe.Probe`, scored by accuracy (chance 0.5 on the
  balanced draws);
* **multi-class**: a pandas ``Categorical`` (class names as text, a missing label NaN), probed by
  :class:`faceprobe.MulticlassProbe` (PLS-DA + QDA), scored by balanced accuracy (chance 1 / classes);
* **continuous**: ``float64`` (a missing value NaN), probed by :class:`faceprobe.RegressionProbe` (PLS
  regression), scored by R^2 (the mean predictor's 0) and by the mean absolute error in the target's unit.

A column of a ``folder:`` CSV gets its kind from its values (:func:`infer_column`): one binary spelling
(-1/1, 0/1, true/false) or two values: binary; at most :data:`MAX_CLASSES` whole numbers or texts:
multi-class; numbers beyond that: continuous. A study can declare a kind instead (``data.kinds``) and build
a multi-class target from one-hot columns (``data.groups``, e.g. CelebA's hair colours): :func:`with_targets`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from faceprobe.errors import DataError, FaceprobeError

if TYPE_CHECKING:
    from faceprobe.data.dataset import FaceDataset

__all__ = [
    "KINDS",
    "MAX_CLASSES",
    "METRICS",
    "Kind",
    "chance_level",
    "declared",
    "infer_column",
    "kind_of",
    "one_hot_group",
    "primary_metric",
    "with_targets",
]

Kind = Literal["binary", "multiclass", "continuous"]
KINDS: tuple[Kind, ...] = ("binary", "multiclass", "continuous")
#: The most classes a column's values are read as; more whole numbers are continuous, more texts no kind.
MAX_CLASSES = 20
#: The metrics each kind is scored by, the first its headline (results.parquet's ``metric`` column).
METRICS: dict[Kind, tuple[str, ...]] = {
    "binary": ("accuracy",),
    "multiclass": ("balanced_accuracy",),
    "continuous": ("r2", "mae"),
}
_BINARY_TOKENS = {"-1", "0", "1", "true", "false"}


def kind_of(labels: pd.Series) -> Kind:
    """The kind of target a label column holds: categorical multi-class, float continuous, else binary."""
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return "multiclass"
    if pd.api.types.is_float_dtype(labels.dtype):
        return "continuous"
    return "binary"


def primary_metric(kind: str) -> str:
    """The metric a kind's curves are drawn in: accuracy, balanced_accuracy or r2."""
    return METRICS[kind][0]  # type: ignore[index]


def chance_level(metric: str, n_classes: int = 2) -> float:
    """What a probe that learned nothing scores: 1/2 (binary, balanced draws), 1/classes, or R^2 0."""
    if metric == "accuracy":
        return 0.5
    if metric == "balanced_accuracy":
        return 1.0 / max(2, n_classes)
    return 0.0


def infer_column(path: Path, name: str, values: pd.Series, header_lines: int = 1) -> pd.Series | None:
    """A non-binary label column from its text cells (blank: missing), or None when it is binary-like
    (its non-blank values all binary spellings: the binary reader then checks it and names a bad cell).

    Raises a one-line :class:`DataError` naming the file, the column (and the line of a bad cell) and the
    fix when the column fits no kind: numbers with a text cell among them, or more than
    :data:`MAX_CLASSES` different texts.
    """
    present = values[values != ""]
    distinct = pd.unique(present.str.lower())
    if present.empty or set(distinct) <= _BINARY_TOKENS or set(distinct) & {"true", "false"}:
        return None  # binary, or a misspelt binary column: the binary reader says which cell
    numbers = pd.to_numeric(present, errors="coerce")
    complete = len(present) == len(values)
    if numbers.notna().all():
        if len(distinct) == 2 and complete:  # two numbers: the larger is the positive class
            return pd.Series((pd.to_numeric(values) > numbers.min()).astype(np.int8), index=values.index)
        whole = bool(np.all(numbers == np.round(numbers)))
        if whole and len(distinct) <= MAX_CLASSES:
            return _categorical(values, sorted(pd.unique(numbers)), numbers)
        return pd.to_numeric(values.replace("", np.nan)).astype(np.float64).set_axis(values.index)
    if set(distinct) & {"0", "1"} and set(pd.unique(present[numbers.notna()])) <= _BINARY_TOKENS:
        return None  # "1" and "yes": a misspelt binary column
    if numbers.notna().sum() > len(present) / 2:
        from faceprobe.data.tables import line_of_row

        row = int(
            np.flatnonzero((values != "").to_numpy() & pd.to_numeric(values, errors="coerce").isna())[0]
        )
        raise DataError(
            f"{path}:{line_of_row(path, header_lines, row)}: {name} is {values.iloc[row]!r}, but its other "
            "values are numbers (a continuous or multi-class target); write a number, or leave the cell empty"
        )
    if len(distinct) == 2 and complete:  # two texts: the later in sorted order is the positive class
        return pd.Series((values == sorted(present.unique())[1]).astype(np.int8), index=values.index)
    if len(distinct) > MAX_CLASSES:
        examples = ", ".join(repr(v) for v in sorted(present.unique())[:3])
        raise DataError(
            f"{path}: column {name} fits no kind of target: {len(distinct)} different texts "
            f"({examples}, ...); "
            f"a target is binary (two values), multi-class (at most {MAX_CLASSES} classes) or continuous "
            "(numbers); fix the column, or remove it from the table"
        )
    return _categorical(values, sorted(present.unique()))


def _categorical(values: pd.Series, classes: Sequence, numbers: pd.Series | None = None) -> pd.Series:
    """A multi-class column: its classes as text (whole numbers written without a fraction)."""
    names = [str(int(c)) if numbers is not None else str(c) for c in classes]
    if numbers is not None:
        text = pd.to_numeric(values.replace("", np.nan)).map(lambda v: np.nan if pd.isna(v) else str(int(v)))
    else:
        text = values.replace("", np.nan)
    return pd.Series(pd.Categorical(text, categories=names), index=values.index)


def one_hot_group(labels: pd.DataFrame, name: str, members: Sequence[str]) -> pd.Series:
    """A multi-class target from 0/1 columns, one per class (CelebA's Black_Hair, Blond_Hair, ...): an
    image with exactly one of them set is of that class; one with none or several is left unlabelled."""
    block = labels[list(members)].to_numpy()
    single = block.sum(axis=1) == 1
    codes = np.where(single, block.argmax(axis=1), -1)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=list(members)), index=labels.index, name=name
    )


def declared(labels: pd.Series, kind: str, where: str) -> pd.Series:
    """``labels`` read as ``kind`` (a study's ``data.kinds``): converted, or one line naming the fix."""
    have = kind_of(labels)
    if kind == have:
        return labels
    if kind == "multiclass":
        values = labels.astype("object").where(labels.notna())
        if have == "continuous" and not np.all(values.dropna() == np.round(values.dropna().astype(float))):
            raise FaceprobeError(
                f"{where}: {labels.name} has fractional values, so it cannot be multi-class; declare it "
                "continuous or leave its kind out"
            )
        text = values.map(lambda v: np.nan if pd.isna(v) else str(int(v)) if have != "multiclass" else v)
        classes = sorted(text.dropna().unique(), key=lambda c: (len(c), c))
        if len(classes) > MAX_CLASSES:
            raise FaceprobeError(
                f"{where}: {labels.name} has {len(classes)} values, more than {MAX_CLASSES} classes; declare "
                "it continuous or leave its kind out"
            )
        return pd.Series(pd.Categorical(text, categories=classes), index=labels.index, name=labels.name)
    if kind == "continuous":
        source = labels.cat.categories if have == "multiclass" else None
        try:
            numbers = (
                labels.astype("object").map(lambda v: np.nan if pd.isna(v) else float(v))
                if source is not None
                else labels.astype(np.float64)
            )
        except ValueError:
            raise FaceprobeError(
                f"{where}: {labels.name} has text values ({', '.join(map(repr, list(source)[:3]))}), so it "
                "cannot be continuous; declare it multiclass or leave its kind out"
            ) from None
        return numbers.astype(np.float64)
    values = labels.dropna()
    distinct = sorted(pd.unique(values.astype("object")), key=str)
    if len(distinct) != 2:
        raise FaceprobeError(
            f"{where}: {labels.name} has {len(distinct)} values, so it cannot be binary; declare it "
            f"{'multiclass' if have == 'multiclass' else 'continuous'} or leave its kind out"
        )
    if labels.isna().any():
        raise FaceprobeError(
            f"{where}: {labels.name} has images without a value, which a binary target cannot; declare it "
            "multiclass or leave its kind out"
        )
    return (labels.astype("object") == distinct[1]).astype(np.int8)


def with_targets(
    dataset: FaceDataset,
    kinds: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    groups: Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]] = (),
    where: str = "data",
) -> FaceDataset:
    """``dataset`` with the study's multi-class groups added as targets and its declared kinds applied.

    Each group (name, its 0/1 member columns) becomes one multi-class column (:func:`one_hot_group`); the
    members stay binary attributes too. Each declared (name, kind) converts that column (:func:`declared`).
    """
    kinds, groups = dict(kinds), dict(groups)
    if not kinds and not groups:
        return dataset
    labels = dataset.attributes
    if labels is None:
        raise FaceprobeError(f"{where}: the dataset has no labels to declare targets of")
    labels = labels.copy()
    problems = []
    for name, members in groups.items():
        missing = [m for m in members if m not in labels]
        binary = [m for m in members if m in labels and kind_of(labels[m]) != "binary"]
        if name in labels:
            problems.append(
                f"{where}.groups: {name} is already a column of the data; name the group otherwise"
            )
        elif missing or binary:
            problems.append(
                f"{where}.groups: {name} names {', '.join(missing + binary)}, "
                f"{'not columns of the data' if missing else 'not binary columns'}; give its binary columns"
            )
        else:
            labels[name] = one_hot_group(labels, name, members)
    for name, kind in kinds.items():
        if name not in labels:
            problems.append(f"{where}.kinds: no column {name!r} in the data")
            continue
        try:
            labels[name] = declared(labels[name], kind, f"{where}.kinds")
        except FaceprobeError as err:
            problems.append(str(err))
    if problems:
        raise FaceprobeError("; ".join(problems))
    return dataclasses.replace(dataset, attributes=labels)
