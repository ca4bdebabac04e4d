"""Whole training jobs, from a dataset spec to a checkpoint folder: what ``faceprobe train`` runs.

``run_recognition`` trains an identity classifier on the training partition's images, holding out a share of
each identity's images to measure identity accuracy; ``run_attributes`` trains the multitask attribute
baseline and writes its per-attribute test accuracy. Both write ``DIR/model.safetensors`` and
``DIR/metadata.json`` (a :mod:`faceprobe.models.checkpoint` folder, so the network loads back to be probed)
and keep their resumable state in ``DIR/last/``: rerunning the same command after an interruption continues
from the last finished epoch, and rerunning it with more ``--epochs`` trains on.

``run_recognition(save_every=N)`` also keeps the network of epochs N, 2N, ... as checkpoints of their own
(``DIR/epochs/epoch-NNNN``), which a study probes with ``weights = "epochs:DIR"``. A resumed run keeps the
epochs its state records and adds the later ones; epoch folders past what the state records (left by a run
that was started over) are removed first, so a folder never mixes the epochs of two runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.lfw import lfw_verification_accuracy, load_lfw, load_lfw_pairs
from faceprobe.errors import FaceprobeError
from faceprobe.models import LoadedModel, load_model
from faceprobe.models.checkpoint import EPOCHS_DIR, epoch_checkpoint, save_checkpoint
from faceprobe.results import to_frame, write_results
from faceprobe.train.attributes import attribute_accuracy, train_attributes
from faceprobe.train.data import LabelledFaces, held_out_split, load_faces
from faceprobe.train.heads import final_linear, fold_margin
from faceprobe.train.loop import TrainResult, finished_epochs, is_main_process
from faceprobe.train.recognition import train_recognition, train_transform

__all__ = ["BASELINE_FILE", "STATE_DIR", "Recipe", "lfw_score", "run_attributes", "run_recognition"]

STATE_DIR = "last"
BASELINE_FILE = "baseline.parquet"
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Recipe:
    """How to train, with the thesis's defaults: SGD (lr 0.005, momentum 0.9) cut tenfold on a plateau of
    ``patience`` epochs, batch 64, 50 epochs, random ``input_size`` crops of the shorter side resized to
    ``input_size * 256 / 224`` with a ``grayscale`` share of the faces turned gray."""

    epochs: int = 50
    input_size: int = 224
    batch_size: int = 64
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    patience: int = 2
    grayscale: float = 0.2
    seed: int = 0


def run_recognition(
    out: str | Path,
    data: str,
    architecture: str = "small",
    recipe: Recipe = Recipe(),
    *,
    head: str = "softmax",
    scale: float = 64.0,
    margin: float | None = None,
    uniform_identities: bool = True,
    held_out: float = 0.2,
    lfw: str | Path | None = None,
    save_every: int = 0,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    workers: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train ``architecture`` to recognise the identities in ``data``'s training partition; returns metadata.

    A ``held_out`` share of each identity's images is kept out of training; the epoch kept is the one with
    the best LFW verification accuracy when ``lfw`` (a folder with ``lfw/`` and ``pairs.txt``) is given,
    else the best held-out identity accuracy. ``amp`` (mixed precision) defaults to on for CUDA only.
    ``save_every`` > 0 keeps a checkpoint of every ``save_every``-th epoch in ``out/epochs/``.
    """
    if save_every < 0:
        raise FaceprobeError(f"save_every must be 0 (keep no epochs) or a number of epochs, not {save_every}")
    faces = load_faces(data)
    if faces.identities is None:
        raise FaceprobeError(f"{data} has no identity labels; recognition training needs them")
    identities = faces.identities
    if faces.partitions is not None:
        identities = identities[faces.partitions.reindex(identities.index) == 0]
    classes, names = pd.factorize(identities, sort=True)
    train, val = held_out_split(pd.Series(classes, index=identities.index), held_out, recipe.seed)
    loaded = _model(architecture, len(names), recipe)
    train_set, val_set = _image_sets(faces, loaded, recipe, train, val)
    score = None if lfw is None else lfw_score(lfw, loaded.preprocessing.transform(), device=device)
    recognition = {
        "head": head,
        "scale": scale,
        "margin": margin,
        "uniform_identities": uniform_identities,
        "held_out": held_out,
        "lfw": None if lfw is None else str(lfw),
        "save_every": save_every,
    }
    extra = {"identities": [int(i) for i in names], "n_train": len(train), "n_held_out": len(val)}
    base = _metadata(loaded, len(names), "recognition", data, recipe, recognition, extra)

    def keep_epoch(model: nn.Module, history: list[dict[str, Any]]) -> None:
        epoch = len(history)
        if save_every and epoch % save_every == 0:
            snapshot = _model(architecture, len(names), recipe).module
            snapshot.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
            if head != "softmax":  # what leaving the margin head does to the final network
                fold_margin(snapshot)
            metrics = _recognition_metrics(history[-1], lfw)
            metadata = {**base, "epoch": epoch, "metrics": metrics, "history": list(history)}
            save_checkpoint(snapshot, epoch_checkpoint(out, epoch), metadata)

    if is_main_process():
        _drop_unrecorded_epochs(Path(out))
    result = train_recognition(
        loaded.module,
        train_set,
        val_set,
        recipe.epochs,
        **_fit_options(recipe, out, device, amp, workers, progress),
        head=head,
        scale=scale,
        margin=margin,
        uniform_identities=uniform_identities,
        score=score,
        epoch_end=keep_epoch,
    )
    metrics = _recognition_metrics(result.history[result.best_epoch - 1], lfw)
    return _save(out, loaded, len(names), "recognition", data, recipe, recognition, result, metrics, extra)


def _recognition_metrics(record: dict[str, Any], lfw: str | Path | None) -> dict[str, Any]:
    """A recognition epoch's metrics, from its history record, as its checkpoint's metadata names them."""
    metrics = {
        "held_out_identity_accuracy": record["val_acc"],
        "train_acc": record["train_acc"],
        "loss": record["loss"],
    }
    if lfw is not None:
        metrics["lfw_verification_accuracy"] = record["score"]
    return metrics


def _drop_unrecorded_epochs(out: Path) -> None:
    """Remove the epoch checkpoints of ``out`` past the epochs its training state has finished.

    They come from a run that was started over (its state deleted) or from an epoch whose state was never
    saved; either way the run about to start makes them again or never, and a study must not probe them
    beside this run's own.
    """
    finished = finished_epochs(out / STATE_DIR)
    holder = out / EPOCHS_DIR
    if not holder.is_dir():
        return
    for folder in holder.glob("epoch-*"):
        number = folder.name.removeprefix("epoch-")
        if number.isdigit() and int(number) > finished:
            shutil.rmtree(folder)


def run_attributes(
    out: str | Path,
    data: str,
    architecture: str = "resnet50",
    recipe: Recipe = Recipe(grayscale=0.0),
    *,
    device: str | torch.device = "cpu",
    amp: bool | None = None,
    workers: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Train the multitask baseline on ``data``'s labelled training images; returns the per-attribute table.

    The epoch kept is the one with the best mean accuracy on the validation partition (the last epoch
    without one); the table (``DIR/baseline.parquet``) holds its accuracy on the test partition.
    """
    faces = load_faces(data)
    if faces.attributes is None or faces.partitions is None:
        raise FaceprobeError(
            f"{data} lacks attribute labels or partitions; the attribute baseline needs both"
        )
    labels = faces.attributes
    partition = faces.partitions.reindex(labels.index)
    parts = [labels[partition == p] for p in (0, 1, 2)]
    for p, name in ((0, "training"), (2, "test")):
        if parts[p].empty:
            raise FaceprobeError(f"{data} has no labelled {name} images (partition {p}); label some")
    loaded = _model(architecture, labels.shape[1], recipe)
    train_set, val_set, test_set = _image_sets(faces, loaded, recipe, *parts)
    result = train_attributes(
        loaded.module,
        train_set,
        val_set if len(val_set) else None,
        recipe.epochs,
        **_fit_options(recipe, out, device, amp, workers, progress),
    )
    accuracy = attribute_accuracy(loaded.module, test_set, device=device)
    rows = [
        {"attribute": name, "accuracy": float(a), "split": "test", "source": f"multitask {architecture}"}
        for name, a in zip(labels.columns, accuracy, strict=True)
    ]
    table = to_frame(rows, "baseline")
    metrics = {"mean_test_accuracy": float(accuracy.mean()), **_kept(result, "val_acc", "train_acc", "loss")}
    extra = {"attributes": list(labels.columns), "n_train": len(train_set), "n_test": len(test_set)}
    _save(out, loaded, labels.shape[1], "attributes", data, recipe, {}, result, metrics, extra)
    if is_main_process():
        write_results(table, Path(out) / BASELINE_FILE)
    return table


def lfw_score(
    root: str | Path,
    transform: Callable[[Any], torch.Tensor],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> Callable[[nn.Module], float]:
    """``score(model)``: LFW 10-fold verification accuracy, comparing pairs by the cosine of their embeddings.

    The embedding is the input of the network's final linear layer (its identity classifier).
    """
    folds = load_lfw_pairs(root)
    faces = load_lfw(root)
    pairs = [(pair, k) for k, fold in enumerate(folds) for pair in fold]
    ids = sorted({i for pair, _ in pairs for i in (pair.first, pair.second)})
    row = {image: k for k, image in enumerate(ids)}
    first = torch.tensor([row[p.first] for p, _ in pairs])
    second = torch.tensor([row[p.second] for p, _ in pairs])
    same = np.array([p.same for p, _ in pairs])
    fold = np.array([k for _, k in pairs])
    images = LabelledFaces(faces, ids, np.zeros(len(ids), dtype=np.int64), transform)

    def score(model: nn.Module) -> float:
        embeddings = _embeddings(model, images, batch_size, device)
        similarity = F.cosine_similarity(embeddings[first], embeddings[second])
        return lfw_verification_accuracy(similarity.numpy(), same, fold).accuracy

    return score


@torch.inference_mode()
def _embeddings(
    model: nn.Module, images: Dataset, batch_size: int, device: str | torch.device
) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = final_linear(model).register_forward_pre_hook(
        lambda _, inputs: captured.append(inputs[0].float().cpu())
    )
    was_training = model.training
    model.eval()
    try:
        for x, _ in DataLoader(images, batch_size=batch_size):
            model(x.to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured)


def _model(architecture: str, num_classes: int, recipe: Recipe) -> LoadedModel:
    size = (recipe.input_size, recipe.input_size)
    return load_model(architecture, "random", num_classes=num_classes, seed=recipe.seed, input_size=size)


def _image_sets(
    faces: FaceDataset, loaded: LoadedModel, recipe: Recipe, *targets: pd.Series | pd.DataFrame
) -> list[LabelledFaces]:
    """Images with targets (indexed by image id): the first set with the training augmentation, the others
    with the model's evaluation preprocessing."""
    pre = loaded.preprocessing
    augment = train_transform(recipe.input_size, recipe.grayscale, pre.mean, pre.std)
    evaluate = pre.transform()
    return [
        LabelledFaces(faces, t.index, t.to_numpy(), augment if k == 0 else evaluate)
        for k, t in enumerate(targets)
    ]


def _fit_options(
    recipe: Recipe, out: str | Path, device: str | torch.device, amp: bool | None, workers: int, progress: Any
) -> dict[str, Any]:
    if amp is None:  # opt-in on the CPU, where bfloat16 changes the results and seldom saves time
        amp = torch.device(device).type == "cuda"
    return {
        "lr": recipe.lr,
        "momentum": recipe.momentum,
        "weight_decay": recipe.weight_decay,
        "batch_size": recipe.batch_size,
        "patience": recipe.patience,
        "seed": recipe.seed,
        "device": device,
        "amp": amp,
        "workers": workers,
        "progress": progress,
        "state_dir": Path(out) / STATE_DIR,
        "keep_best": True,
    }


def _kept(result: TrainResult, *keys: str) -> dict[str, Any]:
    """The kept epoch's values of ``keys``, named as in its history record."""
    record = result.history[result.best_epoch - 1]
    return {key: record[key] for key in keys}


def _metadata(
    loaded: LoadedModel,
    num_classes: int,
    task: str,
    data: str,
    recipe: Recipe,
    options: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """What every checkpoint of a training job records, whichever epoch it holds."""
    return {
        "architecture": loaded.architecture,
        "num_classes": num_classes,
        "preprocessing": loaded.preprocessing.to_dict(),
        "input_size": recipe.input_size,
        "task": task,
        "data": data,
        "recipe": {**asdict(recipe), **options},
        "epochs": recipe.epochs,
        "seed": recipe.seed,
        **extra,
    }


def _save(
    out: str | Path,
    loaded: LoadedModel,
    num_classes: int,
    task: str,
    data: str,
    recipe: Recipe,
    options: dict[str, Any],
    result: TrainResult,
    metrics: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    metadata = {
        **_metadata(loaded, num_classes, task, data, recipe, options, extra),
        "best_epoch": result.best_epoch,
        "metrics": metrics,
        "history": result.history,
    }
    if is_main_process():
        save_checkpoint(loaded.module.cpu(), out, metadata)
    return metadata
