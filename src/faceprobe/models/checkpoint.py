"""Trained models on disk: weights as safetensors, everything else as JSON, never pickle.

A checkpoint is a folder holding ``model.safetensors`` (the state dict) and ``metadata.json``, which names
the architecture in :data:`faceprobe.models.ARCHITECTURES` with its ``num_classes`` and ``model_kwargs``, so
loading rebuilds the network from code and only reads tensors: opening a checkpoint cannot run its code.
A ``preprocessing`` entry (:meth:`Preprocessing.to_dict`) sizes input-dependent heads and is what
:func:`faceprobe.models.load_model` applies; anything else (metrics, seed, ...) is kept as it was given.

A training folder may also keep the network of some epochs (``faceprobe train recognition --save-every``),
each a checkpoint of its own in ``DIR/epochs/epoch-NNNN``: :func:`epoch_checkpoint` names that folder and
:func:`kept_epochs` lists the ones there, so a study can probe the network as training went on.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from faceprobe.atomic import DISK_FULL, atomic_path, atomic_write_text, disk_full_error
from faceprobe.errors import FaceprobeError
from faceprobe.models.preprocessing import Preprocessing
from faceprobe.models.registry import ARCHITECTURES, build_model, did_you_mean

__all__ = [
    "EPOCHS_DIR",
    "METADATA_FILE",
    "WEIGHTS_FILE",
    "epoch_checkpoint",
    "kept_epochs",
    "load_checkpoint",
    "save_checkpoint",
]

WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "metadata.json"
#: The folder of a training run that holds the checkpoints of its kept epochs.
EPOCHS_DIR = "epochs"
_EPOCH = re.compile(r"epoch-(\d+)")


def save_checkpoint(model: nn.Module, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model`` and its JSON-serialisable ``metadata`` into ``out_dir``; returns the folder.

    ``metadata`` must name the ``architecture`` (a key of :data:`~faceprobe.models.ARCHITECTURES`) and
    ``num_classes`` (None for a backbone without classifier); ``model_kwargs`` (default ``{}``) are the
    other arguments that rebuild it. Each file is written atomically, so a crash or a full disk never leaves
    a half-written checkpoint that looks whole.
    """
    for key in ("architecture", "num_classes"):
        if key not in metadata:
            raise FaceprobeError(f"checkpoint metadata lacks {key!r}; add it so the model can be rebuilt")
    if metadata["architecture"] not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FaceprobeError(
            f"checkpoint architecture {metadata['architecture']!r} is not a known model"
            f"{did_you_mean(str(metadata['architecture']), ARCHITECTURES)}; use one of: {known}"
        )
    metadata = {"model_kwargs": {}, **metadata}
    text = json.dumps(metadata, indent=2, sort_keys=True)  # before writing anything: fails on non-JSON values
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        try:
            save_model(model, str(tmp))
        except SafetensorError as e:  # safetensors reports I/O failures, a full disk among them, as its own
            code = re.search(r"os error (\d+)", str(e))
            if code and int(code[1]) in DISK_FULL:
                raise disk_full_error(weights, OSError(int(code[1]), os.strerror(int(code[1])))) from None
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FaceprobeError(
                f"{weights}: cannot be written ({reason}); check the folder and the disk"
            ) from None
    atomic_write_text(out / METADATA_FILE, text + "\n")
    return out


def epoch_checkpoint(folder: str | Path, epoch: int) -> Path:
    """Where a training folder keeps the checkpoint of ``epoch`` (1-based): ``DIR/epochs/epoch-0005``.

    Four digits, so the folders list in epoch order; longer runs get more digits and still parse.
    """
    return Path(folder) / EPOCHS_DIR / f"epoch-{epoch:04d}"


def kept_epochs(folder: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, checkpoint folder)`` of every whole epoch checkpoint of a training folder, in epoch order.

    ``folder`` is the training folder or its ``epochs/`` folder. An epoch folder lacking either file (a
    copy cut short) is left out: only a checkpoint that :func:`load_checkpoint` can read counts as kept.
    """
    folder = Path(folder)
    holder = folder / EPOCHS_DIR if (folder / EPOCHS_DIR).is_dir() else folder
    if not holder.is_dir():
        return []
    kept = []
    for child in holder.iterdir():
        match = _EPOCH.fullmatch(child.name)
        if match and (child / WEIGHTS_FILE).is_file() and (child / METADATA_FILE).is_file():
            kept.append((int(match[1]), child))
    return sorted(kept)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (in eval mode, on the CPU) and metadata saved in a checkpoint folder or one of its files.

    A file that is not what :func:`save_checkpoint` writes (corrupt or truncated weights, metadata that is
    not JSON or lacks the architecture) is a :class:`FaceprobeError` naming it.
    """
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
    metadata = _read_metadata(meta_file)
    size = metadata.get("preprocessing", {}).get("input_size")
    try:
        model = build_model(
            metadata["architecture"],
            metadata["num_classes"],
            tuple(size) if size else None,
            **metadata["model_kwargs"],
        )
    except (FaceprobeError, KeyError, TypeError, ValueError) as e:
        raise FaceprobeError(
            f"{meta_file} is not valid checkpoint metadata: the model cannot be built from it ({e});"
            " save the model again"
        ) from None
    try:
        load_model(model, str(weights))
    except SafetensorError as e:  # not a safetensors file, or cut short: its header does not fit its size
        raise FaceprobeError(
            f"{weights}: corrupt or truncated safetensors file ({e}); save the model again"
        ) from None
    except OSError as e:
        raise FaceprobeError(f"{weights}: cannot be read ({e.strerror or e}); check the file") from None
    except RuntimeError as e:
        lines = str(e).splitlines()  # "Error(s) in loading state_dict for ...", then one line per problem
        detail = (lines[1] if len(lines) > 1 else str(e)).strip()[:200]
        raise FaceprobeError(f"{weights} does not fit the model its metadata describes: {detail}") from e
    return model.eval(), metadata


def _read_metadata(meta_file: Path) -> dict[str, Any]:
    """``metadata.json`` parsed and checked: a JSON object naming a known architecture, and so on."""

    def bad(why: str) -> FaceprobeError:
        return FaceprobeError(f"{meta_file} is not valid checkpoint metadata: {why}; save the model again")

    try:
        metadata = json.loads(meta_file.read_bytes())  # UTF-8, or UTF-16/32 as JSON allows
    except json.JSONDecodeError as e:
        raise bad(f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    if not isinstance(metadata, dict):
        raise bad(f"a JSON {type(metadata).__name__}, not an object of checkpoint fields")
    if "architecture" not in metadata:
        raise bad('no "architecture", so the network cannot be rebuilt')
    if metadata["architecture"] not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        hint = did_you_mean(str(metadata["architecture"]), ARCHITECTURES)
        raise bad(f"architecture {metadata['architecture']!r} is not a known model{hint} (known: {known})")
    if "num_classes" not in metadata:
        raise bad('no "num_classes" (null for a backbone without classifier)')
    metadata.setdefault("model_kwargs", {})  # save_checkpoint's default
    if not isinstance(metadata["model_kwargs"], dict):
        raise bad('"model_kwargs" is not a JSON object')
    preprocessing = metadata.get("preprocessing", {})
    if not isinstance(preprocessing, dict):
        raise bad('"preprocessing" is not a JSON object')
    if preprocessing:
        try:
            Preprocessing.from_dict(preprocessing)
        except (FaceprobeError, TypeError, ValueError) as e:
            raise bad(f'"preprocessing" is invalid ({e})') from None
    return metadata
