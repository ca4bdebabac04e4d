"""LFW: its image folders, its ``pairs.txt`` and the 10-fold verification protocol.

The images are ``lfw/Name/Name_0001.jpg`` (or ``lfw-deepfunneled/...``); their id is ``Name/Name_0001.jpg``.
``pairs.txt`` starts with ``10 300``: 10 folds, each 300 same-person pairs (``name i j``) then 300
different-person pairs (``name1 i name2 j``). Verification accuracy is the protocol's: for each fold, the
similarity threshold that is most accurate on the other nine folds is applied to it, and the mean and
standard deviation over the ten folds are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import link_problem, person_folders
from faceprobe.data.tables import check_text_file
from faceprobe.errors import DataError

__all__ = [
    "IMAGE_DIRS",
    "LFWPair",
    "Verification",
    "lfw_verification_accuracy",
    "load_lfw",
    "load_lfw_pairs",
]

IMAGE_DIRS = ("lfw", "lfw-deepfunneled")
PAIRS_FILE = "pairs.txt"


class LFWPair(NamedTuple):
    """Two image ids of LFW and whether they show the same person."""

    first: str
    second: str
    same: bool


@dataclass(frozen=True)
class Verification:
    """10-fold verification accuracy: mean and standard deviation over folds, and each fold's result."""

    accuracy: float
    std: float
    fold_accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]


def _image_dir(root: Path) -> Path:
    for name in IMAGE_DIRS:
        if problem := link_problem(root / name) or link_problem(root / name / name):
            raise DataError(problem)
        if (root / name).is_dir():
            nested = root / name / name  # Kaggle's edition nests the folder in one of the same name
            return nested if nested.is_dir() else root / name
    raise DataError(f"{root}: no lfw/ or lfw-deepfunneled/ folder; LFW's layout is lfw/Name/Name_0001.jpg")


def load_lfw(root: str | Path, skip_bad_images: bool = False) -> FaceDataset:
    """LFW's images in ``root`` with their identities (one per person folder); LFW has no attribute labels."""
    root = Path(root)
    image_dir = _image_dir(root)
    ids, names = [], []
    for name, files in person_folders(image_dir, (".jpg", ".jpeg", ".png")):
        ids.extend(f"{name}/{f}" for f in files)
        names.extend([name] * len(files))
    if not ids:
        raise DataError(f"{image_dir}: no images in person folders; LFW's layout is lfw/Name/Name_0001.jpg")
    index = pd.Index(ids, name="image")
    codes, _ = pd.factorize(pd.Series(names), sort=True)
    return FaceDataset(
        "lfw",
        root,
        image_dir,
        index,
        identities=pd.Series(codes.astype(np.int64), index=index, name="identity"),
        skip_bad_images=skip_bad_images,
    )


def _image_id(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def load_lfw_pairs(root: str | Path) -> list[list[LFWPair]]:
    """The folds of ``pairs.txt`` (in ``root`` or its image folder); every listed image must exist."""
    root = Path(root)
    image_dir = _image_dir(root)
    path = next((p for p in (root / PAIRS_FILE, image_dir / PAIRS_FILE) if p.is_file()), None)
    if path is None:
        raise DataError(f"{root / PAIRS_FILE} not found; download LFW's pairs.txt beside the lfw/ folder")
    check_text_file(path, "LFW's pairs.txt")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(number, line.split()) for number, line in enumerate(f, start=1) if line.strip()]
    header = lines[0][1] if lines else []
    if len(header) != 2 or not all(field.isdigit() and int(field) > 0 for field in header):
        raise DataError(f"{path}:1: expected the number of folds and of pairs per class, like '10 300'")
    n_folds, per_class = (int(field) for field in header)
    rows = lines[1:]
    if len(rows) != 2 * n_folds * per_class:
        raise DataError(
            f"{path}: {len(rows)} pairs, but line 1 announces {n_folds} folds of {2 * per_class}; "
            "the file is truncated or its first line is wrong"
        )
    folds: list[list[LFWPair]] = []
    for index, (number, fields) in enumerate(rows):
        if index % (2 * per_class) == 0:
            folds.append([])
        same = index % (2 * per_class) < per_class
        expected = "a same-person pair 'name i j'" if same else "a different-person pair 'name1 i name2 j'"
        numbers = fields[1:] if same else fields[1::2]
        if len(fields) != (3 if same else 4) or not all(n.isdigit() for n in numbers):
            raise DataError(f"{path}:{number}: expected {expected}; fix the line or re-download pairs.txt")
        first, second = (
            (_image_id(fields[0], fields[1]), _image_id(fields[0], fields[2]))
            if same
            else (_image_id(fields[0], fields[1]), _image_id(fields[2], fields[3]))
        )
        for image_id in (first, second):
            if not (image_dir / image_id).is_file():
                raise DataError(
                    f"{path}:{number}: {image_dir / image_id} not found; the image folder is incomplete"
                )
        folds[-1].append(LFWPair(first, second, same))
    return folds


def lfw_verification_accuracy(similarities: np.ndarray, same: np.ndarray, folds: np.ndarray) -> Verification:
    """Verification accuracy by cross-validation over ``folds`` (one fold number per pair).

    Each fold is classified with the threshold that is most accurate on all the other folds; a pair is
    judged "same" when its similarity exceeds the threshold.
    """
    similarities = np.asarray(similarities, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    if not similarities.shape == same.shape == folds.shape or similarities.ndim != 1:
        raise ValueError("similarities, same and folds need one value per pair each")
    labels = np.unique(folds)
    if len(labels) < 2:
        raise ValueError("cross-validation needs at least two folds")
    accuracies, thresholds = [], []
    for fold in labels:
        test = folds == fold
        threshold = _best_threshold(similarities[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((similarities[test] > threshold) == same[test])))
    return Verification(
        float(np.mean(accuracies)), float(np.std(accuracies)), tuple(accuracies), tuple(thresholds)
    )


def _best_threshold(similarities: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the most correct "same when above" decisions, midway between neighbours."""
    order = np.argsort(-similarities, kind="stable")
    ranked, positive = similarities[order], same[order]
    n = len(ranked)
    true_pos = np.concatenate([[0], np.cumsum(positive)])  # among the k most similar, for k = 0..n
    correct = true_pos + (n - positive.sum()) - (np.arange(n + 1) - true_pos)
    cut_ok = np.ones(n + 1, dtype=bool)
    cut_ok[1:n] = ranked[:-1] > ranked[1:]  # never split tied similarities
    k = int(np.argmax(np.where(cut_ok, correct, -1)))
    if k == 0:
        return float(np.inf)
    if k == n:
        return float(-np.inf)
    return float((ranked[k - 1] + ranked[k]) / 2)
