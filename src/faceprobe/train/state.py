"""A training run's state on disk, so an interrupted run resumes exactly: safetensors plus JSON, never pickle.

``DIR/state.safetensors`` holds every tensor (model, best model so far, optimizer buffers, random generator
states) and ``DIR/state.json`` everything else (epoch, history, optimizer hyper-parameters, scheduler, loss
scaler). Both are written into a fresh folder that then replaces the old one, so an interruption while saving
leaves the previous epoch's state intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from faceprobe.errors import FaceprobeError

__all__ = ["STATE_JSON", "STATE_TENSORS", "load_info", "load_state", "save_state"]

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def save_state(folder: str | Path, tensors: dict[str, dict[str, Any]], info: dict[str, Any]) -> Path:
    """Write groups of named values: tensors go to safetensors as ``group.name``, the rest to JSON.

    ``tensors`` maps a group (``"model"``, ``"optimizer"``, ...) to a flat ``{name: value}``; a value that is
    not a tensor (a step count, ``None``) is kept in the JSON under ``"values"``.
    """
    folder = Path(folder)
    flat: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for group, items in tensors.items():
        values[group] = {}
        for name, value in items.items():
            if isinstance(value, torch.Tensor):
                # Cloned: safetensors refuses tensors that share memory (tied weights, views).
                flat[f"{group}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                values[group][name] = value
    text = json.dumps({**info, "values": values}, indent=1)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(flat, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(text + "\n")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _saved(folder: Path) -> Path | None:
    """The folder holding the last saved state: ``folder``, or its ``.old`` copy where a save was
    interrupted between its two renames; None when neither holds one."""
    old = folder.with_name(folder.name + ".old")
    if not (folder / STATE_JSON).is_file() and (old / STATE_JSON).is_file():
        return old
    return folder if (folder / STATE_JSON).is_file() else None


def _unreadable(folder: Path, path: Path, why: object) -> FaceprobeError:
    return FaceprobeError(f"{path}: unreadable training state ({why}); delete {folder} to start over")


def load_info(folder: str | Path) -> dict[str, Any] | None:
    """The JSON part of the state saved in ``folder`` (without its tensors), or None when none was saved:
    what a job needs to know how far a run got, without reading the weights."""
    saved = _saved(Path(folder))
    if saved is None:
        return None
    try:
        info = json.loads((saved / STATE_JSON).read_text())
    except (OSError, ValueError) as e:
        raise _unreadable(saved, saved / STATE_JSON, e) from None
    if not isinstance(info, dict) or not isinstance(info.get("values"), dict):
        raise _unreadable(saved, saved / STATE_JSON, 'not an object with "values"')
    return info


def load_state(folder: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
    """The ``(groups, info)`` saved by :func:`save_state`, or None when no state was saved there."""
    info = load_info(folder)
    saved = _saved(Path(folder))
    if info is None or saved is None:
        return None
    try:
        flat = load_file(str(saved / STATE_TENSORS))  # safetensors only: a pickle there is never run
    except (OSError, SafetensorError) as e:
        raise _unreadable(saved, saved / STATE_TENSORS, e) from None
    groups: dict[str, dict[str, Any]] = {g: dict(v) for g, v in info.pop("values").items()}
    for key, tensor in flat.items():
        group, name = key.split(".", 1)
        groups.setdefault(group, {})[name] = tensor
    return groups, info
