"""Train a network to recognise identities: the task whose side effects the probes measure.

The recipe is the thesis's: softmax cross-entropy over identities drawn uniformly, SGD with momentum, the
learning rate cut tenfold whenever the training loss stops falling, and light augmentation (random crop, flip,
20% grayscale). ArcFace and CosFace margins are options beyond it. The loop itself (seeding, resuming, mixed
precision, DDP) is :func:`faceprobe.train.loop.fit`; :mod:`faceprobe.train.jobs` runs whole jobs from a data
spec to a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision.transforms import v2

from faceprobe.errors import FaceprobeError
from faceprobe.train.heads import HEADS, MarginHead, margin_training
from faceprobe.train.loop import Forward, TrainResult, fit, mean_score

__all__ = ["TrainResult", "evaluate", "identity_hits", "train_recognition", "train_transform"]


def train_transform(
    input_size: int,
    grayscale: float = 0.2,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> v2.Compose:
    """The training augmentation of a PIL face: the thesis's, scaled to ``input_size``.

    Like :func:`faceprobe.data.images.eval_transform` (its deterministic counterpart) it resizes the
    shorter side to ``input_size * 256 / 224``, then crops at random, turns a ``grayscale`` fraction of the
    faces gray (still three channels), flips half of them and normalises with ``mean`` and ``std`` (by
    default to [-1, 1]); give the model's own so training sees faces as evaluation will.
    """
    return v2.Compose(
        [
            v2.Resize(round(input_size * 256 / 224)),
            v2.RandomCrop(input_size),
            v2.RandomGrayscale(p=grayscale),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor(),
        ]
    )


def identity_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 where the top logit is the sample's identity, else 0."""
    return (logits.argmax(1) == targets).float()


def evaluate(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu"
) -> float:
    """Identity accuracy of ``model`` on ``(image, target)`` pairs, computed in eval mode (then restored)."""
    return mean_score(model, dataset, identity_hits, batch_size, device)


def train_recognition(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    epochs: int,
    lr: float = 0.005,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 0,
    patience: int = 2,
    *,
    head: str = "softmax",
    scale: float = 64.0,
    margin: float | None = None,
    uniform_identities: bool = False,
    amp: bool = False,
    state_dir: str | Path | None = None,
    keep_best: bool = False,
    score: Callable[[nn.Module], float] | None = None,
    epoch_end: Callable[[nn.Module, list[dict[str, Any]]], None] | None = None,
) -> TrainResult:
    """Train ``model`` (logits over identities) on ``(image, target)`` pairs; returns the per-epoch history.

    ``head`` is ``softmax`` (the thesis), ``arcface`` or ``cosface`` (:mod:`faceprobe.train.heads`, with
    ``scale`` and ``margin``); ``uniform_identities`` draws every identity equally often (the thesis), which
    needs the dataset's ``targets``. The other arguments are those of :func:`faceprobe.train.loop.fit`:
    resuming from ``state_dir``, mixed precision, keeping the best epoch by ``score`` or held-out accuracy,
    ``epoch_end`` after every epoch (with a margin head, it sees the network before the final fold).
    """
    if head not in HEADS:
        raise FaceprobeError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    weights = _identity_weights(train_set) if uniform_identities else None
    margins: AbstractContextManager[Forward | None] = nullcontext()
    if head != "softmax":
        margins = margin_training(model, MarginHead(head, scale, margin))  # type: ignore[arg-type]
    with margins as forward:
        return fit(
            model,
            train_set,
            val_set,
            epochs,
            loss=nn.functional.cross_entropy,
            hits=identity_hits,
            forward=forward,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            batch_size=batch_size,
            device=device,
            seed=seed,
            progress=progress,
            workers=workers,
            patience=patience,
            sample_weights=weights,
            amp=amp,
            state_dir=state_dir,
            keep_best=keep_best,
            score=score,
            epoch_end=epoch_end,
        )


def _identity_weights(dataset: Dataset) -> torch.Tensor:
    """Each image's weight ``1 / images of its identity``, so a weighted draw picks identities uniformly."""
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset):
        targets = dataset.tensors[1]
    if targets is None:
        raise FaceprobeError(
            f"sampling identities uniformly needs each image's identity, but a {type(dataset).__name__} "
            "has no .targets; give it one or turn uniform identity sampling off"
        )
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    counts = torch.bincount(targets)
    return 1.0 / counts[targets].double()
