"""The thesis's sampling protocol: a seeded, balanced draw of train and validation images per attribute.

A layer output is too large to fit a probe on a whole dataset, and one fixed subset would be unbalanced for
most attributes, so every attribute gets its own balanced draw from the pool (CelebA's train + val splits);
the test split stays untouched for the final table. Draws become row sets of one union matrix, so each image
goes through the network once however many attributes use it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Draw", "balanced_draws", "union_ids"]


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
    """
    draws = {}
    ids = labels.index.to_numpy()
    for attribute in labels.columns:
        rng = np.random.default_rng([seed, zlib.crc32(attribute.encode())])
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


def union_ids(draws: dict[str, Draw], extra: tuple[str, ...] = ()) -> list[str]:
    """Sorted union of all draws' images (plus ``extra``), so each is extracted exactly once."""
    ids: set[str] = set(extra)
    for draw in draws.values():
        ids.update(draw.train)
        ids.update(draw.val)
    return sorted(ids)
