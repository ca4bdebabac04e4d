"""The models of a study: one entry per (model table, weight origin, seed), each with a unique, stable id.

An entry's id is what the result tables call ``model``: its readable name (``name`` in the study file,
else ``ARCHITECTURE/ORIGIN``), a short digest of everything that makes it a different network (architecture,
the weights file's content, preprocessing, layers, strictness) and its seed, e.g.
``resnet50/imagenet#3fa2b1c0/s0``. Two face-trained checkpoints of one architecture thus never share an id,
and two entries that would compute the same thing are refused when the study is read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faceprobe.errors import FaceprobeError
from faceprobe.models.checkpoint import METADATA_FILE, WEIGHTS_FILE
from faceprobe.run.config import ModelConfig, RunConfig

__all__ = ["ModelEntry", "model_entries"]


@dataclass(frozen=True)
class ModelEntry:
    """One network of a study: a model table's architecture with one weight origin and one seed."""

    table: ModelConfig
    weights: str
    seed: int
    label: str
    digest: str

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
        return {**identity, **settings, "weights": self.weights, "seed": self.seed}

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
        for weights in model.weights:
            digest = _digest(model, weights)
            for seed in model.seeds:
                entry = _entry(model, weights, seed, digest)
                if entry.id in seen:
                    raise FaceprobeError(
                        f"{config.source or 'config'}: [[models]] #{i + 1} repeats the model {entry.id} of "
                        f"[[models]] #{seen[entry.id] + 1} (same architecture, weights, preprocessing, "
                        "layers and seed); remove one"
                    )
                seen[entry.id] = i
                entries.append(entry)
    return entries


def _entry(model: ModelConfig, weights: str, seed: int, digest: str) -> ModelEntry:
    kind, _, path = weights.partition(":")
    origin = Path(path).name if kind == "checkpoint" and path else kind
    return ModelEntry(model, weights, seed, model.name or f"{model.architecture}/{origin}", digest)


def _digest(model: ModelConfig, weights: str) -> str:
    """8 hex digits over the architecture, the weights (a checkpoint's bytes), preprocessing and layers."""
    settings = {
        "architecture": model.architecture,
        "weights": weights.partition(":")[0],
        "layers": model.layers,
        "input_size": model.input_size,
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
