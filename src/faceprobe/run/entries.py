"""The models of a study: one entry per (model table, weight origin, seed), each with a unique, stable id.

An entry's id is what the result tables call ``model``: its readable name (``name`` in the study file,
else ``ARCHITECTURE/ORIGIN``), a short digest of everything that makes it a different network (architecture,
the weights file's content, preprocessing, layers, strictness) and its seed, e.g.
``resnet50/imagenet#3fa2b1c0/s0``. Two face-trained checkpoints of one architecture thus never share an id,
and two entries that would compute the same thing are refused when the study is read.

The origin ``epochs:DIR`` (a training folder of ``faceprobe train recognition --save-every``) stands for
every epoch that folder keeps: each becomes an entry of its own, loaded as ``checkpoint:`` its epoch's folder,
with its ``epoch`` recorded and in its name (``small/face/epoch-5#...``), so probing across training is
probing one model per epoch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faceprobe.errors import FaceprobeError
from faceprobe.models.checkpoint import EPOCHS_DIR, METADATA_FILE, WEIGHTS_FILE, kept_epochs
from faceprobe.run.config import ModelConfig, RunConfig

__all__ = ["ModelEntry", "model_entries"]


@dataclass(frozen=True)
class ModelEntry:
    """One network of a study: a model table's architecture with one weight origin and one seed.

    ``epoch`` is the training epoch the weights are from, for an entry of an ``epochs:DIR`` origin; -1 for
    every other origin (as in the results' ``epoch`` column).
    """

    table: ModelConfig
    weights: str
    seed: int
    label: str
    digest: str
    epoch: int = -1

    @property
    def architecture(self) -> str:
        return self.table.architecture

    @property
    def layers(self) -> str:
        return self.table.layers

    @property
    def variant(self) -> str:
        """The id without the seed: entries of one variant differ only in their seed."""
        return f"{self.label}#{self.digest}"

    @property
    def id(self) -> str:
        return f"{self.variant}/s{self.seed}"

    @property
    def slug(self) -> str:
        """The id as a file-name part."""
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in self.id)

    def to_dict(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.table).items() if k not in ("weights", "seeds", "name")}
        identity = {"id": self.id, "variant": self.variant, "name": self.label}
        return {**identity, **settings, "weights": self.weights, "seed": self.seed, "epoch": self.epoch}

    def load(self) -> Any:
        """The network with its weights and preprocessing (:class:`faceprobe.models.LoadedModel`)."""
        from faceprobe.models import load_model
        from faceprobe.models.preprocessing import parse_size

        table = self.table
        return load_model(
            table.architecture,
            self.weights,
            seed=self.seed,
            input_size=parse_size(table.input_size, "input_size"),
            crop=table.crop,
            mean=table.mean,
            std=table.std,
            bgr=table.bgr,
            strict=table.strict,
        )


def model_entries(config: RunConfig) -> list[ModelEntry]:
    """Every model entry of ``config``, in order; two entries with the same id are refused in one line."""
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for i, model in enumerate(config.models):
        where = f"{config.source or 'config'}: [[models]] #{i + 1}"
        for weights, epoch in (pair for origin in model.weights for pair in _origins(origin, where)):
            digest = _digest(model, weights)
            for seed in model.seeds:
                entry = _entry(model, weights, seed, digest, epoch)
                if entry.id in seen:
                    raise FaceprobeError(
                        f"{config.source or 'config'}: [[models]] #{i + 1} repeats the model {entry.id} of "
                        f"[[models]] #{seen[entry.id] + 1} (same architecture, weights, preprocessing, "
                        "layers and seed); remove one"
                    )
                seen[entry.id] = i
                entries.append(entry)
    return entries


def _origins(origin: str, where: str) -> list[tuple[str, int]]:
    """The ``(weights, epoch)`` an origin stands for: itself (epoch -1), or for ``epochs:DIR`` the checkpoint
    of every epoch ``DIR`` keeps, in epoch order."""
    kind, _, path = origin.partition(":")
    if kind != "epochs":
        return [(origin, -1)]
    if not path:
        raise FaceprobeError(f"{where}: weights {origin!r} need a training folder, e.g. epochs:runs/face")
    folder = Path(path)
    if not folder.is_dir():
        raise FaceprobeError(
            f"{where}: weights {origin}: no training folder at {folder}; give the --out folder of "
            "faceprobe train recognition"
        )
    kept = kept_epochs(folder)
    if not kept:
        raise FaceprobeError(
            f"{where}: weights {origin}: {folder} keeps no epochs (no {EPOCHS_DIR}/epoch-NNNN checkpoints); "
            "train it with faceprobe train recognition --save-every N to keep every Nth epoch"
        )
    return [(f"checkpoint:{checkpoint}", epoch) for epoch, checkpoint in kept]


def _entry(model: ModelConfig, weights: str, seed: int, digest: str, epoch: int = -1) -> ModelEntry:
    kind, _, path = weights.partition(":")
    if epoch >= 0:  # DIR/epochs/epoch-NNNN: named after its training folder DIR, then its epoch
        label = model.name or f"{model.architecture}/{Path(path).parent.parent.name}"
        return ModelEntry(model, weights, seed, f"{label}/epoch-{epoch}", digest, epoch)
    origin = Path(path).name if kind == "checkpoint" and path else kind
    return ModelEntry(model, weights, seed, model.name or f"{model.architecture}/{origin}", digest)


def _digest(model: ModelConfig, weights: str) -> str:
    """8 hex digits over the architecture, the weights (a checkpoint's bytes), preprocessing and layers."""
    settings = {
        "architecture": model.architecture,
        "weights": weights.partition(":")[0],
        "layers": model.layers,
        "input_size": _size_key(model.input_size),
        "crop": model.crop,
        "mean": model.mean,
        "std": model.std,
        "bgr": model.bgr,
        "strict": model.strict,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    kind, _, path = weights.partition(":")
    if kind == "checkpoint":
        _hash_files(digest, Path(path))
    return digest.hexdigest()[:8]


def _size_key(text: str | int | None) -> str | int | None:
    """One spelling per input size (``32``, ``"32"`` and ``"32x32"`` are the same network input): a square
    size as its side, as a study file usually writes it, so that ids of such studies stay as they were."""
    from faceprobe.models.preprocessing import parse_size

    size = parse_size(text, "input_size")
    if size is None:
        return None
    return size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}"


def _hash_files(digest: Any, path: Path) -> None:
    """Feed the bytes of a checkpoint file, or of a faceprobe checkpoint folder's network, into ``digest``.

    A folder's training state (``last/``) is left out: it changes as training goes on, the network not.
    """
    if not path.exists():  # loading it says so, with every other problem of the study
        return
    files = [path / WEIGHTS_FILE, path / METADATA_FILE] if path.is_dir() else [path]
    files = [file for file in files if file.is_file()]  # a folder without them fails to load, with its reason
    for file in files:
        digest.update(file.name.encode())
        try:
            with file.open("rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
        except OSError as err:
            raise FaceprobeError(f"{file}: cannot read the checkpoint ({err.strerror}); check it") from None
