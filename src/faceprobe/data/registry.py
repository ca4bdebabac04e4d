"""``KIND:PATH``, the one way every command and config names a dataset, and the reader for each kind.

- ``celeba:DIR`` CelebA's layout, .txt or .csv label files (:func:`faceprobe.data.celeba.celeba_dataset`);
- ``synthetic:DIR`` faces written by ``faceprobe synth``, in CelebA's layout;
- ``vggface2:DIR`` a folder with ``train/`` and/or ``test/`` (:func:`faceprobe.data.vggface2.load_vggface2`);
- ``lfw:DIR`` a folder holding ``lfw/`` or ``lfw-deepfunneled/`` (:func:`faceprobe.data.lfw.load_lfw`);
- ``folder:IMAGES,LABELS.csv`` an image folder and its label table, or ``folder:LABELS.csv`` when the
  table's image paths are relative to its own folder (:func:`faceprobe.data.folder.load_folder`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import NamedTuple

from faceprobe.data.celeba import celeba_dataset
from faceprobe.data.dataset import BadImage, FaceDataset
from faceprobe.data.folder import load_folder
from faceprobe.data.images import link_problem
from faceprobe.data.lfw import load_lfw
from faceprobe.data.vggface2 import load_vggface2
from faceprobe.errors import DataError

__all__ = ["KINDS", "BadImage", "DataSpec", "FaceDataset", "absolute_spec", "load_dataset", "parse_data_spec"]

KINDS = ("celeba", "synthetic", "vggface2", "lfw", "folder")


class DataSpec(NamedTuple):
    """A parsed ``KIND:PATH``; ``labels`` is the table of a ``folder`` dataset, else ``None``."""

    kind: str
    path: Path
    labels: Path | None = None


def parse_data_spec(spec: str) -> DataSpec:
    """Split ``KIND:PATH`` (see the module's table) and check the kind; paths are checked when loading."""
    kind, colon, path = spec.partition(":")
    kind = kind.strip().lower()
    if not colon or not path:
        raise DataError(
            f"dataset {spec!r}: write KIND:PATH, e.g. celeba:/data/celeba (kinds: {', '.join(KINDS)})"
        )
    if kind not in KINDS:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DataError(f"dataset {spec!r}: unknown kind {kind!r}; {hint}kinds are {', '.join(KINDS)}")
    if kind != "folder":
        return DataSpec(kind, Path(path))
    images, comma, labels = path.rpartition(",")
    if not comma:
        return DataSpec(kind, Path(path).parent, Path(path))
    return DataSpec(kind, Path(images), Path(labels))


def absolute_spec(spec: str, base: Path) -> str:
    """``spec`` with its paths made absolute against ``base`` (a study file's folder), the kind checked."""
    parsed = parse_data_spec(spec)

    def absolute(path: Path) -> str:
        try:
            return str((base / path.expanduser()).resolve())
        except (RuntimeError, OSError):  # a symbolic-link loop
            whole = base / path.expanduser()
            raise DataError(link_problem(whole) or f"{whole}: a symbolic-link loop; fix the link") from None

    if parsed.kind != "folder":
        return f"{parsed.kind}:{absolute(parsed.path)}"
    assert parsed.labels is not None  # parse_data_spec sets it for folders
    if "," not in spec:
        return f"folder:{absolute(parsed.labels)}"
    return f"folder:{absolute(parsed.path)},{absolute(parsed.labels)}"


def load_dataset(spec: str | DataSpec, skip_bad_images: bool = False) -> FaceDataset:
    """Read the dataset ``spec`` names. Labels are checked now, listed images must exist, and images are
    decoded later by :meth:`FaceDataset.scan`; with ``skip_bad_images`` bad ones are skipped and recorded
    in :attr:`FaceDataset.skipped` instead of raising."""
    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    if not spec.path.exists():
        raise DataError(f"{spec.path} not found; check the path of the {spec.kind} dataset")
    if spec.kind in ("celeba", "synthetic"):
        return celeba_dataset(spec.path, spec.kind, skip_bad_images)
    if spec.kind == "vggface2":
        return load_vggface2(spec.path, skip_bad_images)
    if spec.kind == "lfw":
        return load_lfw(spec.path, skip_bad_images)
    assert spec.labels is not None  # parse_data_spec sets it for folders
    return load_folder(spec.path, spec.labels, skip_bad_images)
