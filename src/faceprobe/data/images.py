"""Face images as tensors, the evaluation preprocessing used for every model, and image folders on disk."""

from __future__ import annotations

import errno
import os
import struct
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from faceprobe.errors import DataError

__all__ = ["FaceImages", "eval_transform", "link_problem", "load_image", "person_folders"]

#: PIL warns about images above this many pixels and refuses twice as many; faceprobe refuses both, by name
#: (no face crop is that large: it is a corrupt header or a decompression bomb), so the warning is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_FIX = "re-extract or re-download it"


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB, decoding it fully now so that a bad file fails here, by name.

    16-bit images (PNG or TIFF, mode ``I;16``; PNG's 16-bit grey also as ``I``) are scaled to 8 bits by
    their bit depth; 32-bit integer and float images have no such scale and are refused. So are images
    declaring more than PIL's ``MAX_IMAGE_PIXELS`` (a corrupt header or a decompression bomb), before any
    pixel is decoded.
    """
    try:
        with Image.open(path) as image:
            pixels = image.width * image.height
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise _too_large(path, f"{image.width}x{image.height} pixels")
            return _to_rgb(path, image)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image not found; check that the image folder is complete") from None
    except Image.DecompressionBombError as error:  # declared above twice the limit: refused by PIL itself
        size = next((word for word in str(error).split() if word.startswith("(")), "")
        raise _too_large(path, f"{size.strip('(')} pixels" if size else "too many pixels") from None
    except OSError as error:
        if error.errno is not None:  # the file cannot be read at all: say why, not "corrupt"
            raise DataError(f"{path}: {_os_reason(error)}") from None
        raise _undecodable(path, error) from None  # PIL's UnidentifiedImageError, "image file is truncated"
    except (ValueError, EOFError, SyntaxError, struct.error) as error:  # other decoder failures
        raise _undecodable(path, error) from None


def _to_rgb(path: str | Path, image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB; 16-bit grey is scaled by its bit depth (PIL's conversion clips it to white)."""
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        grey = np.asarray(image).astype(np.uint32)
        grey = ((grey * 255 + 32767) // 65535).clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("I", "F") or image.mode.startswith(("I;", "F;")):
        kind = "floating-point" if image.mode.startswith("F") else "32-bit integer"
        raise DataError(
            f"{path}: a {kind} image (mode {image.mode}) has no standard 8-bit scale; "
            "save it as 8-bit (or 16-bit) RGB or greyscale"
        )
    return image.convert("RGB")


def _too_large(path: str | Path, size: str) -> DataError:
    return DataError(
        f"{path}: declares {size}, too many to decode safely (a corrupt header or a decompression bomb); "
        f"{_FIX}"
    )


def _undecodable(path: str | Path, error: BaseException) -> DataError:
    reason = str(error).splitlines()[0].replace(";", ",") if str(error) else type(error).__name__
    return DataError(f"{path}: cannot decode the image ({reason}); the file is corrupt or truncated, {_FIX}")


def _os_reason(error: OSError) -> str:
    """The reason and fix for a file the system cannot open (a symbolic-link loop, no permission, ...)."""
    if error.errno == errno.ELOOP:
        return "a symbolic-link loop (the link leads back to itself); fix or remove the link"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied); fix its permissions"
    if error.errno == errno.EISDIR:
        return "a folder, not an image; move it out of the image folder"
    return f"cannot be read ({error.strerror or error}); check the file and the disk"


def link_problem(path: Path) -> str | None:
    """Why ``path``, a symbolic link, leads nowhere (a loop, a missing target), as ``"<path>: <why>; fix"``;
    None when ``path`` is not such a link."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{path}: a symbolic-link loop (the link leads back to itself); fix or remove the link"
        return (
            f"{path}: the symbolic link points to {os.readlink(path)}, which does not exist; fix or remove it"
        )
    return None


def person_folders(folder: Path, suffixes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The sub-folders of ``folder`` (one per person) by name, each with its image files (by ``suffixes``),
    sorted. A sub-folder that cannot be listed, such as a symbolic-link loop, is a :class:`DataError`
    naming it; other files in ``folder`` are ignored."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        raise DataError(link_problem(folder) or f"{folder}: {_os_reason(error)}") from None
    found = []
    for entry in entries:
        path = Path(entry.path)
        try:
            if not entry.is_dir():
                problem = link_problem(path) if entry.is_symlink() else None
                if problem:
                    raise DataError(problem)
                continue
            files = sorted(f for f in os.listdir(path) if f.lower().endswith(tuple(suffixes)))
        except OSError as error:
            raise DataError(link_problem(path) or f"{path}: {_os_reason(error)}") from None
        found.append((entry.name, files))
    return found


def eval_transform(
    input_size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation preprocessing at any input size: resize the shorter side to ``input_size * 256 / 224``,
    centre-crop ``input_size``, scale to [0, 1] and normalise. At 224 it is the usual resize-256-crop-224,
    so a model sees faces framed the same way whatever its input size."""
    return v2.Compose(
        [
            v2.Resize(round(input_size * 256 / 224)),
            v2.CenterCrop(input_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
            v2.ToPureTensor(),
        ]
    )


_TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])


class FaceImages(Dataset):
    """Images named by ``images`` (paths, or ids that ``opener`` understands), each as ``(image, target)``.

    ``opener`` turns an entry of ``images`` into an RGB PIL image (by default :func:`load_image` of a path;
    ``FaceDataset.open_image`` reads ids and applies VGGFace2's crops). ``image`` is what ``transform`` makes
    of it (by default a float32 CxHxW tensor in [0, 1]); ``target`` is the int64 row of ``targets`` for that
    image (a scalar for 1-d targets), or -1 without targets, so the same DataLoader code serves labelled and
    unlabelled images.
    """

    def __init__(
        self,
        images: Sequence[str | Path],
        targets: np.ndarray | None = None,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        opener: Callable[[Any], Image.Image] = load_image,
    ) -> None:
        self.images = list(images)
        if targets is not None:
            targets = np.asarray(targets, dtype=np.int64)
            if len(targets) != len(self.images):
                raise ValueError(f"{len(targets)} targets for {len(self.images)} images; give one per image")
        self.targets = targets
        self.transform = _TO_TENSOR if transform is None else transform
        self.opener = opener

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(self.opener(self.images[index]))
        target = -1 if self.targets is None else self.targets[index]
        return image, torch.as_tensor(target, dtype=torch.int64)
