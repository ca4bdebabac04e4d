"""The training loop that recognition and attribute training share: seeded, resumable, AMP and DDP aware.

SGD with momentum and weight decay; the rate is cut tenfold after ``patience`` epochs without a lower
training loss (``ReduceLROnPlateau``). A run is reproducible from its seed: the sampler draws from its own
generator and the augmentation from torch's global one, seeded for the run and restored afterwards. With
``state_dir`` the whole state (model, optimizer, scheduler, loss scaler, generators, history) is saved after
every epoch, and a run started again with the same arguments continues from the last finished epoch exactly
as if it had never stopped. ``epoch_end`` sees the model after every epoch, before that epoch's state is
saved: whatever it writes (a checkpoint of the epoch) is written again, identically, by a run resumed after a
crash between the two.

Mixed precision (``amp``): float16 with loss scaling on CUDA, bfloat16 (same range as float32, so no
scaling) on the CPU; the weights stay float32. Several GPUs, or several CPU processes: start the command
under ``torchrun``; the process group is then initialised (see :func:`init_distributed`), the model wrapped
in ``DistributedDataParallel``, each rank trains on its shard of every epoch's draw, the ranks end every
epoch with rank 0's batch-norm statistics (so all hold the same model) and rank 0 alone writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from faceprobe.errors import FaceprobeError
from faceprobe.train.state import load_info, load_state, save_state

__all__ = [
    "AMP_DTYPES",
    "EpochSampler",
    "TrainResult",
    "finished_epochs",
    "fit",
    "init_distributed",
    "is_main_process",
    "mean_score",
]

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``hits(outputs, targets)``: each sample's score in [0, 1] (1 = right), the accuracy's numerator.
Hits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: The reduced precision ``amp`` trains in, per device type.
AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: one record per epoch, the kept epoch and its held-out accuracy (None without).

    Each record has ``epoch`` (1-based), ``loss`` (mean training loss), ``train_acc`` (on the augmented
    training batches), ``val_acc`` (None without a validation set), ``lr`` (the rate the epoch used) and, with
    a ``score`` function, ``score``. The model holds the weights of ``best_epoch``: the last epoch, or with
    ``keep_best`` the one with the best score (else held-out accuracy).
    """

    history: list[dict[str, Any]]
    val_acc: float | None
    best_epoch: int


class EpochSampler(Sampler[int]):
    """Every epoch a fresh draw from its own generator, split between the DDP ranks.

    Without ``weights`` a permutation; with them ``n`` draws with replacement in proportion to the weights
    (``1 / images of the identity`` samples identities uniformly). With several ranks the draw is cut to a
    multiple of their number so that every rank runs the same number of batches.
    """

    def __init__(
        self,
        n: int,
        weights: torch.Tensor | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.weights, self.rank, self.world_size = n, weights, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        if self.weights is None:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        return iter(order[: len(self) * self.world_size][self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.n // self.world_size


def init_distributed(device: str | torch.device | None = None) -> torch.device:
    """The device this process trains on; under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the group first.

    ``device`` defaults to CUDA when present, else the CPU; CUDA without an index means this rank's GPU
    (``LOCAL_RANK``). The group's backend follows the device: NCCL for CUDA, gloo otherwise.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local if device.index is None else device.index)
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def is_main_process() -> bool:
    """True outside DDP, and on rank 0 inside it: the process that writes files and reports progress."""
    return not dist.is_initialized() or dist.get_rank() == 0


@torch.inference_mode()
def mean_score(
    model: nn.Module,
    dataset: Dataset,
    hits: Hits,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> float:
    """Mean of ``hits`` over ``(image, target)`` pairs, computed in eval mode (then restored)."""
    was_training = model.training
    model.eval()
    try:
        total, seen = 0.0, 0
        for x, y in DataLoader(dataset, batch_size=batch_size):
            total += float(hits(model(x.to(device)).float().cpu(), y).sum())
            seen += len(y)
    finally:
        model.train(was_training)
    return total / max(seen, 1)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    epochs: int,
    *,
    loss: Loss,
    hits: Hits,
    forward: Forward | None = None,
    lr: float = 0.005,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 0,
    patience: int = 2,
    sample_weights: torch.Tensor | None = None,
    amp: bool = False,
    state_dir: str | Path | None = None,
    keep_best: bool = False,
    score: Callable[[nn.Module], float] | None = None,
    epoch_end: Callable[[nn.Module, list[dict[str, Any]]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``(image, target)`` pairs by SGD for ``epochs`` epochs; returns the history.

    ``forward(model, x, y)`` computes the outputs (default ``model(x)``; a margin head needs ``y``),
    ``loss(outputs, y)`` the batch loss and ``hits`` the accuracy. ``sample_weights`` makes each epoch a
    weighted draw (see :class:`EpochSampler`); ``score(model)`` (e.g. LFW verification accuracy) is recorded
    every epoch and, with ``keep_best``, picks the epoch whose weights are kept. ``amp`` trains in mixed
    precision on CUDA or the CPU (ignored elsewhere). ``state_dir`` makes the run resumable;
    ``epoch_end(model, history)`` runs on the main process after each epoch (``history[-1]`` is its record),
    before the state is saved. ``progress``
    gets ``{"event": "step", "epoch", "step", "steps", "loss", "acc"}`` after every batch (running means over
    the epoch) and ``{"event": "epoch", **record}`` after every epoch. The model is moved to ``device`` and
    left in eval mode.
    """
    n = len(train_set)  # type: ignore[arg-type]
    if epochs < 1 or batch_size < 1 or n < 2:
        raise FaceprobeError(
            f"training needs epochs >= 1, batch_size >= 1 and 2+ images; got {epochs}, {batch_size}, {n}"
        )
    device = torch.device(device)
    amp = amp and device.type in AMP_DTYPES
    cuda = [device.index or 0] if device.type == "cuda" else []
    model.to(device)
    distributed = dist.is_initialized()
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    sampler = EpochSampler(
        n,
        sample_weights,
        seed,
        dist.get_rank() if distributed else 0,
        dist.get_world_size() if distributed else 1,
    )
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        # A last batch of one image would break BatchNorm in training mode.
        drop_last=len(sampler) % batch_size == 1,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=patience)
    # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    forward = forward or (lambda m, x, _: m(x))
    fingerprint = {"n_train": n, "batch_size": batch_size, "seed": seed, "lr": lr, "momentum": momentum}
    history: list[dict[str, Any]] = []
    best: dict[str, torch.Tensor] | None = None
    best_epoch, best_value = 0, float("-inf")
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        saved = load_state(state_dir) if state_dir is not None else None
        if saved is not None:
            groups, info = saved
            if info["fingerprint"] != fingerprint:
                raise FaceprobeError(
                    f"{state_dir} holds a run with {info['fingerprint']}, not {fingerprint}; "
                    "rerun with those settings to resume, or delete that folder to start over"
                )
            model.load_state_dict(groups["model"])
            optimizer.load_state_dict(_nest_optimizer(groups["optimizer"], info["optimizer"]))
            scheduler.load_state_dict(info["scheduler"])
            if info["scaler"]:  # empty when saved without mixed precision
                scaler.load_state_dict(info["scaler"])
            torch.set_rng_state(groups["rng"]["torch"])
            sampler.generator.set_state(groups["rng"]["sampler"])
            if cuda and "cuda" in groups["rng"]:
                torch.cuda.set_rng_state(groups["rng"]["cuda"], cuda[0])
            history, best_epoch, best_value = info["history"], info["best_epoch"], info["best_value"]
            best = groups.get("best")
        for epoch in range(len(history) + 1, epochs + 1):
            net.train()
            loss_sum, correct, seen = 0.0, 0.0, 0
            for step, (x, y) in enumerate(loader, start=1):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=AMP_DTYPES.get(device.type), enabled=amp):
                    outputs = forward(net, x, y)
                    batch_loss = loss(outputs.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(batch_loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += batch_loss.item() * len(y)
                correct += float(hits(outputs.detach().float(), y).sum())
                seen += len(y)
                if progress is not None and is_main_process():
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
            if distributed:
                totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=device)
                dist.all_reduce(totals)
                loss_sum, correct, seen = totals.tolist()
                # DDP averages the gradients but each rank's last batch moved its own batch-norm
                # statistics: take rank 0's, so every rank evaluates, keeps and saves the same model.
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "train_acc": correct / seen,
                "val_acc": None if val_set is None else mean_score(model, val_set, hits, device=device),
                "lr": optimizer.param_groups[0]["lr"],
            }
            if score is not None:
                record["score"] = float(score(model))
            scheduler.step(record["loss"])
            history.append(record)
            value = record.get("score", record["val_acc"])
            if keep_best and value is not None and value > best_value:
                best_epoch, best_value = epoch, value
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if epoch_end is not None and is_main_process():
                epoch_end(model, history)
            if state_dir is not None and is_main_process():
                optimizer_state = optimizer.state_dict()
                rng = {"torch": torch.get_rng_state(), "sampler": sampler.generator.get_state()}
                if cuda:
                    rng["cuda"] = torch.cuda.get_rng_state(cuda[0])
                save_state(
                    state_dir,
                    {
                        "model": model.state_dict(),
                        "optimizer": _flatten_optimizer(optimizer_state["state"]),
                        "rng": rng,
                        **({"best": best} if best is not None else {}),
                    },
                    {
                        "fingerprint": fingerprint,
                        "history": history,
                        "best_epoch": best_epoch,
                        "best_value": best_value,
                        "optimizer": optimizer_state["param_groups"],
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                    },
                )
            if distributed:
                dist.barrier()
            if progress is not None and is_main_process():
                progress({"event": "epoch", **record})
    if keep_best and best is not None:
        model.load_state_dict(best)
    else:
        best_epoch = len(history)
    model.eval()
    return TrainResult(history, history[best_epoch - 1]["val_acc"], best_epoch)


def finished_epochs(state_dir: str | Path) -> int:
    """How many epochs the run resumable from ``state_dir`` has finished (0 when none was saved there)."""
    info = load_info(state_dir)
    history = None if info is None else info.get("history")
    return len(history) if isinstance(history, list) else 0


def _flatten_optimizer(state: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {f"{param}.{name}": value for param, values in state.items() for name, value in values.items()}


def _nest_optimizer(flat: dict[str, Any], param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    return {"state": state, "param_groups": param_groups}
