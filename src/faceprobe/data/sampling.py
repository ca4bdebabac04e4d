"""The thesis's sampling protocol: a seeded, balanced draw of train and validation images per attribute.

A layer output is too large to fit a probe on a whole dataset, and one fixed subset would be unbalanced for
most attributes, so every attribute gets its own balanced draw from the pool (CelebA's train + val splits);
the test split stays untouched for the final table. Draws become row sets of one union matrix, so each image
goes through the network once however many attributes use it.

:func:`sample_protocol` applies the whole protocol to a :class:`~faceprobe.data.dataset.FaceDataset`: it
draws, decodes the images drawn (so a corrupt one fails before any forward pass, or is skipped and the draws
are taken again without it), and returns a :class:`Protocol` that the run saves with its results.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from faceprobe.data.dataset import BadImage, FaceDataset
from faceprobe.errors import DataError, FaceprobeError

__all__ = [
    "Draw",
    "Protocol",
    "attribute_labels",
    "balanced_draws",
    "sample_protocol",
    "stratified_draw",
    "union_ids",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Draw:
    """Image ids of one attribute's train and validation sets (each half positive, half negative)."""

    attribute: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    requested: tuple[int, int]

    @property
    def shortened(self) -> bool:
        """True when the attribute lacked samples of a class and a smaller balanced draw was taken."""
        return (len(self.train), len(self.val)) != self.requested


def balanced_draws(labels: pd.DataFrame, n_train: int, n_val: int, seed: int = 0) -> dict[str, Draw]:
    """One balanced draw per column of ``labels`` (index: image ids of the pool, values 0/1).

    When an attribute has fewer than ``(n_train + n_val) / 2`` images of a class, the largest balanced draw
    that keeps the train:validation ratio is taken instead (``Draw.shortened`` says so). Each attribute's
    draw depends only on the seed and its name, so adding attributes never changes the others' draws.

    Beyond the thesis, a multi-class or continuous column (:mod:`faceprobe.targets`) gets a stratified
    draw instead (:func:`stratified_draw`): its classes, or its value's deciles, in the pool's proportions.
    """
    from faceprobe.targets import kind_of

    draws = {}
    ids = labels.index.to_numpy()
    for attribute in labels.columns:
        rng = np.random.default_rng([seed, zlib.crc32(attribute.encode())])
        if kind_of(labels[attribute]) != "binary":
            draws[attribute] = stratified_draw(labels[attribute], n_train, n_val, rng)
            continue
        values = labels[attribute].to_numpy()
        pos = rng.permutation(ids[values == 1])
        neg = rng.permutation(ids[values == 0])
        per_class = min(len(pos), len(neg), (n_train + n_val) // 2)
        train_half = round(per_class * n_train / (n_train + n_val))
        val_half = per_class - train_half
        train = np.concatenate([pos[:train_half], neg[:train_half]])
        val = np.concatenate(
            [pos[train_half : train_half + val_half], neg[train_half : train_half + val_half]]
        )
        draws[attribute] = Draw(
            attribute, tuple(rng.permutation(train)), tuple(rng.permutation(val)), (n_train, n_val)
        )
    return draws


#: Strata of a continuous target's draw: its value's quantile bins.
QUANTILE_BINS = 10


def stratified_draw(labels: pd.Series, n_train: int, n_val: int, rng: np.random.Generator) -> Draw:
    """A train and a validation draw of a multi-class or continuous target, stratified (beyond the thesis).

    Images without a label are left out. The strata are the classes (multi-class) or the
    :data:`QUANTILE_BINS` quantile bins of the value (continuous): each stratum gives both draws its share
    of the pool (largest remainders), so the draws keep the pool's class frequencies or its value's
    distribution, and a rare class or an extreme value reaches the validation draw too. Balanced accuracy
    (multi-class) and R^2 (continuous) are read against that distribution. When the pool has fewer than
    ``n_train + n_val`` labelled images, all of them are drawn in the same train:validation ratio
    (``Draw.shortened``).
    """
    labelled = labels.dropna()
    ids = labelled.index.to_numpy()
    if isinstance(labelled.dtype, pd.CategoricalDtype):
        strata = labelled.cat.codes.to_numpy()
    else:
        ranks = labelled.rank(method="first").to_numpy() - 1
        strata = (ranks * QUANTILE_BINS // max(1, len(ranks))).astype(int)
    total = min(len(ids), n_train + n_val)
    train_total = round(total * n_train / (n_train + n_val))
    names, counts = np.unique(strata, return_counts=True)
    take = _shares(counts, total)
    train_take = _shares(take, train_total)
    train, val = [], []
    for name, k, k_train in zip(names, take, train_take, strict=True):
        members = rng.permutation(ids[strata == name])[:k]
        train.append(members[:k_train])
        val.append(members[k_train:])
    return Draw(
        str(labels.name),
        tuple(rng.permutation(np.concatenate(train))),
        tuple(rng.permutation(np.concatenate(val))),
        (n_train, n_val),
    )


def _shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """``total`` split in proportion to ``sizes`` by largest remainders, never more than a size."""
    exact = sizes * total / max(1, sizes.sum())
    share = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - share), kind="stable")[: total - share.sum()]:
        share[i] += 1
    return np.minimum(share, sizes)


def union_ids(draws: dict[str, Draw], extra: tuple[str, ...] = ()) -> list[str]:
    """Sorted union of all draws' images (plus ``extra``), so each is extracted exactly once."""
    ids: set[str] = set(extra)
    for draw in draws.values():
        ids.update(draw.train)
        ids.update(draw.val)
    return sorted(ids)


@dataclass(frozen=True)
class Protocol:
    """The images of one run: each attribute's balanced draw from the pool, and the shared test images.

    ``skipped`` lists the images left out as bad (missing or undecodable) when the dataset was read with
    ``skip_bad_images``; the draws and ``test_ids`` never include them.
    """

    draws: dict[str, Draw]
    test_ids: tuple[str, ...]
    n_train: int
    n_val: int
    seed: int
    skipped: tuple[BadImage, ...] = ()

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.draws)

    @property
    def shortened(self) -> dict[str, tuple[int, int]]:
        """The attributes whose draw is smaller than requested, with the (train, val) sizes drawn."""
        return {a: (len(d.train), len(d.val)) for a, d in self.draws.items() if d.shortened}

    def union(self) -> list[str]:
        """Sorted ids of every image the run uses, each once: extract these, then select rows per draw."""
        return union_ids(self.draws, self.test_ids)

    def to_frame(self) -> pd.DataFrame:
        """One row per (attribute, split, image_id), to save with the run. Every attribute is tested on the
        same images, so test rows appear once, with a missing attribute."""
        rows = [
            (attribute, split, image_id)
            for attribute, draw in self.draws.items()
            for split, ids in (("train", draw.train), ("val", draw.val))
            for image_id in ids
        ]
        rows.extend((None, "test", image_id) for image_id in self.test_ids)
        frame = pd.DataFrame(rows, columns=["attribute", "split", "image_id"])
        return frame.astype(
            {
                "attribute": pd.CategoricalDtype(list(self.draws)),
                "split": pd.CategoricalDtype(list(SPLITS), ordered=True),
                "image_id": str,
            }
        )


def sample_protocol(
    dataset: FaceDataset,
    attributes: Sequence[str] | Literal["all"] = "all",
    n_train: int = 2048,
    n_val: int = 6144,
    n_test: int | None = None,
    seed: int = 0,
    scan: bool = True,
    workers: int | None = None,
) -> Protocol:
    """The thesis's protocol on ``dataset``: per attribute a seeded balanced draw of ``n_train`` + ``n_val``
    images from the pool (partitions 0 and 1; every labelled image when there are no partitions), and the
    labelled test images (partition 2; all of them, or a seeded subset of ``n_test``), never drawn from.

    With ``scan`` the images used are decoded first (see :meth:`FaceDataset.scan`); bad ones raise, or with
    ``skip_bad_images`` are left out and everything is drawn again without them, so a run never meets them.
    """
    if min(n_train, n_val) < 1 or (n_test is not None and n_test < 0):
        raise FaceprobeError(
            f"draw sizes must be positive and n_test at least 0; got n_train {n_train}, n_val {n_val}, "
            f"n_test {n_test}"
        )
    labels = attribute_labels(dataset, attributes)
    partitions = (
        pd.Series(0, index=labels.index)
        if dataset.partitions is None
        else dataset.partitions.reindex(labels.index)
    )
    while True:
        bad = pd.Index([b.image_id for b in dataset.skipped])
        usable = ~labels.index.isin(bad)
        draws = balanced_draws(labels[usable & partitions.isin([0, 1]).to_numpy()], n_train, n_val, seed)
        test = labels.index[usable & (partitions == 2).to_numpy()]
        if n_test is not None and n_test < len(test):
            rng = np.random.default_rng([seed, zlib.crc32(b"test")])
            test = test[rng.choice(len(test), n_test, replace=False)]
        test_ids = tuple(sorted(test))
        before = len(dataset.skipped)
        if scan:
            dataset = dataset.scan(union_ids(draws, test_ids), workers)
        if len(dataset.skipped) == before:
            return Protocol(draws, test_ids, n_train, n_val, seed, dataset.skipped)


def attribute_labels(dataset: FaceDataset, attributes: Sequence[str] | Literal["all"]) -> pd.DataFrame:
    """The labels of the chosen attributes (0/1, or any kind of target); an unknown name raises with the
    closest known names."""
    if dataset.attributes is None:
        raise DataError(
            f"{dataset.root}: a {dataset.kind} dataset has no attribute labels; "
            "probe attributes on celeba, synthetic or folder data"
        )
    if attributes == "all":
        return dataset.attributes
    if isinstance(attributes, str):
        attributes = [attributes]
    dataset = dataset.naming(attributes)
    names = dataset.label_names
    for attribute in attributes:
        if attribute not in names:
            close = difflib.get_close_matches(attribute, names, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise DataError(
                f"{dataset.root}: no attribute {attribute!r}; {hint}it has {len(names)}: {', '.join(names)}"
            )
    return dataset.attributes[list(dict.fromkeys(attributes))]
