"""The supervised multitask baseline: one network predicting every binary attribute at once.

The thesis compares each probe with this ceiling (its Table 5.2's last column): a network trained for the
attributes themselves, one logit per attribute and binary cross-entropy summed over them, evaluated on the
dataset's test split attribute by attribute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from faceprobe.train.loop import TrainResult, fit

__all__ = ["attribute_accuracy", "attribute_hits", "train_attributes"]


def attribute_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each sample's fraction of attributes predicted right (a logit above 0 means present)."""
    return ((logits > 0) == targets.bool()).float().mean(1)


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, targets.float())


def train_attributes(
    model: nn.Module, train_set: Dataset, val_set: Dataset | None, epochs: int, **options: Any
) -> TrainResult:
    """Train ``model`` (one logit per attribute) on ``(image, 0/1 labels)`` pairs by multitask BCE.

    ``options`` are those of :func:`faceprobe.train.loop.fit` (learning rate, seed, ``state_dir``, ...);
    accuracies in the history are means over the attributes.
    """
    return fit(model, train_set, val_set, epochs, loss=_bce, hits=attribute_hits, **options)


@torch.inference_mode()
def attribute_accuracy(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Per-attribute accuracy of ``model`` on ``(image, labels)`` pairs, in eval mode (then restored)."""
    was_training = model.training
    model.eval()
    try:
        right: torch.Tensor | None = None
        seen = 0
        for x, y in DataLoader(dataset, batch_size=batch_size):
            batch = ((model(x.to(device)).cpu() > 0) == y.bool()).sum(0)
            right = batch if right is None else right + batch
            seen += len(y)
            if progress is not None:
                progress(len(y))
    finally:
        model.train(was_training)
    if right is None:
        raise ValueError("attribute_accuracy needs at least one image")
    return right.double().numpy() / seen
