"""Trained models on disk: weights as safetensors, everything else as JSON, never pickle.

A checkpoint is a folder holding ``model.safetensors`` (the state dict) and ``metadata.json``, which names
the architecture in :data:`faceprobe.models.ARCHITECTURES` with its ``num_classes`` and ``model_kwargs``, so
loading rebuilds the network from code and only reads tensors: opening a checkpoint cannot run its code.
A ``preprocessing`` entry (:meth:`Preprocessing.to_dict`) sizes input-dependent heads and is what
:func:`faceprobe.models.load_model` applies; anything else (metrics, seed, ...) is kept as it was given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.models.registry import ARCHITECTURES, build_model

__all__ = ["METADATA_FILE", "WEIGHTS_FILE", "load_checkpoint", "save_checkpoint"]

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"


def save_checkpoint(model: nn.Module, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model`` and its JSON-serialisable ``metadata`` into ``out_dir``; returns the folder.

    ``metadata`` must name the ``architecture`` (a key of :data:`~faceprobe.models.ARCHITECTURES`) and
    ``num_classes`` (None for a backbone without classifier); ``model_kwargs`` (default ``{}``) are the
    other arguments that rebuild it.
    """
    for key in ("architecture", "num_classes"):
        if key not in metadata:
            raise FaceprobeError(f"checkpoint metadata lacks {key!r}; add it so the model can be rebuilt")
    if metadata["architecture"] not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FaceprobeError(
            f"checkpoint architecture {metadata['architecture']!r} is not a known model; use one of: {known}"
        )
    metadata = {"model_kwargs": {}, **metadata}
    text = json.dumps(metadata, indent=2, sort_keys=True)  # before writing anything: fails on non-JSON values
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / WEIGHTS_FILE))
    (out / METADATA_FILE).write_text(text + "\n")
    return out


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (in eval mode, on the CPU) and metadata saved in a checkpoint folder or one of its files."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        raise FaceprobeError(
            f"{path} is a pickle checkpoint, which faceprobe never loads; save it as safetensors"
        )
    folder = path.parent if path.is_file() else path
    weights, meta_file = folder / WEIGHTS_FILE, folder / METADATA_FILE
    if not (weights.is_file() and meta_file.is_file()):
        raise FaceprobeError(
            f"no checkpoint at {path}: expected {WEIGHTS_FILE} and {METADATA_FILE} in that folder"
        )
    try:
        metadata = json.loads(meta_file.read_text())
        size = metadata.get("preprocessing", {}).get("input_size")
        model = build_model(
            metadata["architecture"],
            metadata["num_classes"],
            tuple(size) if size else None,
            **metadata["model_kwargs"],
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FaceprobeError(
            f"{meta_file} is not valid checkpoint metadata ({e!r}); save the model again"
        ) from e
    try:
        load_model(model, str(weights))
    except RuntimeError as e:
        lines = str(e).splitlines()  # "Error(s) in loading state_dict for ...", then one line per problem
        detail = (lines[1] if len(lines) > 1 else str(e)).strip()[:200]
        raise FaceprobeError(f"{weights} does not fit the model its metadata describes: {detail}") from e
    return model.eval(), metadata
