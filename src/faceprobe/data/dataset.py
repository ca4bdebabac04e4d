"""A face dataset in any published layout: image ids, optional labels, and a checked way to open images.

Every reader (CelebA, VGGFace2, LFW, folder + CSV) returns a :class:`FaceDataset`, so sampling,
extraction and training never look at a layout. Bad images are found in two steps: loading checks that every
listed file exists (one directory listing per folder, cheap even for CelebA's 202,599 images), and
:meth:`FaceDataset.scan` decodes only the images a run will use, in parallel threads, before any network
sees them. With ``skip_bad_images`` both steps drop the bad images and record why in
:attr:`FaceDataset.skipped`, for the run's manifest; without it the first bad image raises a one-line
:class:`~faceprobe.errors.DataError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image

from faceprobe.data.images import FaceImages, load_image
from faceprobe.errors import DataError

__all__ = ["BadImage", "FaceDataset"]

_SKIP_HINT = "restore the file, or pass --skip-bad-images (skip_bad_images=True) to skip and record it"


class BadImage(NamedTuple):
    """An image left out of a dataset, and why (``"missing"`` or the decoder's complaint)."""

    image_id: str
    reason: str


@dataclass(frozen=True)
class FaceDataset:
    """A face dataset: image ids (paths relative to ``image_dir``) and whatever labels its layout has.

    ``attributes`` holds 0/1 ``int8`` labels and may cover only some ids (as in a sample of CelebA);
    ``identities`` are integers, ``partitions`` 0 train, 1 val, 2 test, and ``boxes`` the VGGFace2 loose
    crops (``left, top, width, height``); each is ``None`` when the layout has none. ``named_targets`` are
    labels used only where named (a synthetic dataset's ``targets.csv``): kept out of ``attributes`` so that
    every attribute, as ``"all"`` and the attribute baseline read them, stays the layout's binary columns;
    :meth:`naming` moves the named ones in.
    """

    kind: str
    root: Path
    image_dir: Path
    ids: pd.Index
    attributes: pd.DataFrame | None = None
    identities: pd.Series | None = None
    partitions: pd.Series | None = None
    boxes: pd.DataFrame | None = None
    skip_bad_images: bool = False
    skipped: tuple[BadImage, ...] = ()
    named_targets: pd.DataFrame | None = None
    scanned: frozenset[str] = frozenset()

    @property
    def attribute_names(self) -> list[str]:
        return [] if self.attributes is None else list(self.attributes.columns)

    @property
    def label_names(self) -> list[str]:
        """Every label a study may name: the attributes, then the named targets not among them."""
        extra = [] if self.named_targets is None else list(self.named_targets.columns)
        return self.attribute_names + [name for name in extra if name not in self.attribute_names]

    def fingerprint(self) -> str:
        """A digest of the image ids and every label table: equal fingerprints, the same labelled data.

        A resumed run compares it with the one it started with, so it never mixes two datasets.
        """
        digest = hashlib.sha256("\n".join(map(str, self.ids)).encode())
        for table in (self.attributes, self.identities, self.partitions, self.boxes):
            if table is not None:
                digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
        return digest.hexdigest()[:16]

    def image_path(self, image_id: str) -> Path:
        return self.image_dir / image_id

    def naming(self, names: Iterable[str] | str) -> FaceDataset:
        """This dataset with the :attr:`named_targets` among ``names`` added to its attributes (``"all"``
        names none of them)."""
        extra = self.named_targets
        wanted = [] if extra is None or isinstance(names, str) else [n for n in names if n in extra]
        if not wanted or self.attributes is None:
            return self
        labels = self.attributes.join(extra[[n for n in wanted if n not in self.attributes]], how="left")
        return dataclasses.replace(self, attributes=labels)

    def open_image(self, image_id: str) -> Image.Image:
        """The RGB image, cropped to its loose box when the dataset has boxes (the VGGFace2 protocol)."""
        image = load_image(self.image_path(image_id))
        if self.boxes is None or image_id not in self.boxes.index:
            return image
        left, top, width, height = (int(v) for v in self.boxes.loc[image_id])
        # Loose boxes may reach past the border; crop to what the image holds.
        box = (max(left, 0), max(top, 0), min(left + width, image.width), min(top + height, image.height))
        return image.crop(box) if box[0] < box[2] and box[1] < box[3] else image

    def torch_dataset(
        self,
        ids: Sequence[str] | None = None,
        targets: np.ndarray | None = None,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> FaceImages:
        """``ids`` (default: all) as a torch ``Dataset`` of ``(tensor, target)``, opened by :meth:`open_image`
        so VGGFace2's crops apply; ``transform`` is the model's preprocessing."""
        return FaceImages(list(self.ids if ids is None else ids), targets, transform, opener=self.open_image)

    def without(self, bad: Sequence[BadImage]) -> FaceDataset:
        """This dataset minus ``bad`` images, which are added to :attr:`skipped`."""
        if not bad:
            return self
        drop = pd.Index([b.image_id for b in bad])
        return dataclasses.replace(
            self,
            ids=self.ids.difference(drop, sort=False),
            **{
                name: table.drop(drop, errors="ignore")
                for name in ("attributes", "identities", "partitions", "boxes", "named_targets")
                if (table := getattr(self, name)) is not None
            },
            skipped=(*self.skipped, *bad),
        )

    def check_files(self) -> FaceDataset:
        """Check that every listed image file exists; a missing one raises, or is skipped and recorded."""
        by_folder: dict[str, list[str]] = {}
        for image_id in self.ids:
            folder, _, _ = image_id.rpartition("/")
            by_folder.setdefault(folder, []).append(image_id)
        missing = []
        for folder, ids in by_folder.items():
            try:
                present = set(os.listdir(self.image_dir / folder))
            except (FileNotFoundError, NotADirectoryError):
                present = set()
            except OSError as err:  # a symbolic-link loop, a folder we may not read
                where = self.image_dir / folder
                raise DataError(f"{where}: {err.strerror}; fix the folder or its link") from None
            missing.extend(i for i in ids if i.rpartition("/")[2] not in present)
        if missing and not self.skip_bad_images:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{self.image_path(missing[0])}: image not found{more}; {_SKIP_HINT}")
        return self.without([BadImage(image_id, "missing") for image_id in missing])

    def scan(self, ids: Iterable[str] | None = None, workers: int | None = None) -> FaceDataset:
        """Decode ``ids`` (default: all) in ``workers`` threads so no corrupt image reaches a forward pass.

        Returns this dataset without the images that fail when ``skip_bad_images`` is set (they are added to
        :attr:`skipped`); otherwise the first failure raises. Images scanned before are not decoded again.
        """
        todo = [i for i in dict.fromkeys(self.ids if ids is None else ids) if i not in self.scanned]
        unknown = pd.Index(todo).difference(self.ids)
        if len(unknown):
            raise ValueError(f"{unknown[0]} is not an image of this dataset ({self.root})")
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(self._decode_error, todo))
        bad = [BadImage(i, reason) for i, reason in zip(todo, reasons, strict=True) if reason is not None]
        if bad and not self.skip_bad_images:
            more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
            raise DataError(f"{self.image_path(bad[0].image_id)}: {bad[0].reason}{more}; {_SKIP_HINT}")
        return dataclasses.replace(self.without(bad), scanned=self.scanned.union(todo))

    def _decode_error(self, image_id: str) -> str | None:
        path = self.image_path(image_id)
        try:
            load_image(path)
        except DataError as error:  # "<path>: <reason>; <fix>": keep the reason
            return str(error).removeprefix(f"{path}: ").split(";", 1)[0]
        return None
