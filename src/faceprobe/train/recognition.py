"""Train a network to recognise identities: the task whose side effects the probes measure.

The recipe is the thesis's: softmax cross-entropy over identities, SGD with momentum, the learning rate cut
tenfold whenever the training loss stops falling, and light augmentation (random crop, flip, 20% grayscale).
A run is reproducible from its seed: shuffling draws from its own generator, and the augmentation draws from
torch's global generator, seeded for the run and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from faceprobe.errors import FaceprobeError

__all__ = ["TrainResult", "evaluate", "train_recognition", "train_transform"]


def train_transform(input_size: int) -> v2.Compose:
    """The training augmentation of a PIL face: the thesis's, scaled to ``input_size``.

    Like :func:`faceprobe.data.images.eval_transform` (its deterministic counterpart) it resizes the
    shorter side to ``input_size * 256 / 224``, then crops at random, turns 20% of the faces gray (still
    three channels), flips half of them and normalises to [-1, 1].
    """
    return v2.Compose(
        [
            v2.Resize(round(input_size * 256 / 224)),
            v2.RandomCrop(input_size),
            v2.RandomGrayscale(p=0.2),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
            v2.ToPureTensor(),
        ]
    )


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: one record per epoch and the final held-out accuracy (None without one).

    Each record has ``epoch`` (1-based), ``loss`` (mean training loss), ``train_acc`` (on the augmented
    training batches), ``val_acc`` (None without a validation set) and ``lr`` (the rate the epoch used).
    """

    history: list[dict[str, Any]]
    val_acc: float | None


@torch.inference_mode()
def evaluate(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu"
) -> float:
    """Identity accuracy of ``model`` on ``(image, target)`` pairs, computed in eval mode (then restored)."""
    was_training = model.training
    model.eval()
    try:
        correct = total = 0
        for x, y in DataLoader(dataset, batch_size=batch_size):
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    return correct / max(total, 1)


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
) -> TrainResult:
    """Train ``model`` (logits over identities) on ``(image, target)`` pairs; returns the per-epoch history.

    SGD with momentum and weight decay; the rate is cut tenfold after ``patience`` epochs without a lower
    training loss (``ReduceLROnPlateau``). The model is moved to ``device`` and left in eval mode.
    ``progress`` gets ``{"event": "step", "epoch", "step", "steps", "loss", "acc"}`` after every batch
    (running means over the epoch) and ``{"event": "epoch", **record}`` after every epoch.
    """
    n = len(train_set)  # type: ignore[arg-type]
    if epochs < 1 or batch_size < 1 or n < 2:
        raise FaceprobeError(
            f"training needs epochs >= 1, batch_size >= 1 and 2+ images; got {epochs}, {batch_size}, {n}"
        )
    device = torch.device(device)
    model.to(device)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        persistent_workers=workers > 0,
        # A last batch of one image would break BatchNorm in training mode.
        drop_last=n % batch_size == 1,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=patience)
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, Any]] = []
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            for step, (x, y) in enumerate(loader, start=1):
                x, y = x.to(device), y.to(device)
                logits = model(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if progress is not None:
                    progress(
                        {
                            "event": "step",
                            "epoch": epoch,
                            "step": step,
                            "steps": len(loader),
                            "loss": loss_sum / seen,
                            "acc": correct / seen,
                        }
                    )
            record = {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "train_acc": correct / seen,
                "val_acc": None if val_set is None else evaluate(model, val_set, device=device),
                "lr": optimizer.param_groups[0]["lr"],
            }
            scheduler.step(record["loss"])
            history.append(record)
            if progress is not None:
                progress({"event": "epoch", **record})
    model.eval()
    return TrainResult(history, history[-1]["val_acc"])
