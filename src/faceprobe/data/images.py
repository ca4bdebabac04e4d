"""Face images as tensors, and the evaluation preprocessing used for every model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from faceprobe.errors import DataError

__all__ = ["FaceImages", "eval_transform", "load_image"]


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, decoding it fully now so that a corrupt file fails here, by name."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found; check that the image folder is complete") from None
    except OSError as error:  # PIL's UnidentifiedImageError, "image file is truncated", ...
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path}: cannot decode the image ({reason}); the file is corrupt or truncated, "
            "re-extract or re-download it"
        ) from None


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
