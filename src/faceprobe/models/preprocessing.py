"""How a network expects its faces: crop, size, normalisation and channel order, as one value.

A wrong crop or normalisation still yields numbers, only meaningless ones, so the preprocessing is part of a
loaded model (and of every activation store key) rather than a loose option of each command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from faceprobe.errors import FaceprobeError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "parse_size", "thesis_resize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: The largest input side accepted: past it one image's activations alone would not fit in memory.
MAX_INPUT_SIZE = 2048


def parse_size(text: str | int | None, name: str = "--input-size") -> tuple[int, int] | None:
    """``"112x96"`` -> ``(112, 96)`` (height, width); ``"112"`` or ``112`` is square; None stays None."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise FaceprobeError(f"{name} takes HEIGHTxWIDTH in pixels, e.g. 112x96; got {text!r}")
    if max(size) > MAX_INPUT_SIZE:
        raise FaceprobeError(
            f"{name} {text!r} is larger than {MAX_INPUT_SIZE} pixels a side; face networks take 112-224"
        )
    return size  # type: ignore[return-value]


def thesis_resize(input_size: tuple[int, int]) -> int:
    """The shorter side the thesis resizes to before centre-cropping ``input_size``: 256 for 224."""
    return round(min(input_size) * 256 / 224)


@dataclass(frozen=True)
class Preprocessing:
    """The deterministic evaluation preprocessing of one network.

    The source image is cropped to ``crop`` (left, top, right, bottom pixels) when given; then either its
    shorter side is resized to ``resize_shorter`` and the centre ``input_size`` (height, width) cut out (the
    thesis's resize-256-crop-224 framing), or, with ``resize_shorter=None``, it is resized to ``input_size``
    exactly (aligned face crops, as IResNet and MobileFaceNet expect). Pixels are scaled to [0, 1] and
    normalised with ``mean`` and ``std``, both given in R, G, B order; ``bgr`` then reverses the channels
    for networks trained on OpenCV images.
    """

    input_size: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None
    resize_shorter: int | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    bgr: bool = False

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise FaceprobeError(
                f"input size must be two positive integers HxW, e.g. 112x96; got {self.input_size}"
            )
        if self.crop is not None:
            left, top, right, bottom = self.crop
            if left < 0 or top < 0 or right <= left or bottom <= top:
                raise FaceprobeError(
                    f"crop box {self.crop} must be LEFT,TOP,RIGHT,BOTTOM >= 0 with LEFT < RIGHT, TOP < BOTTOM"
                )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise FaceprobeError(f"mean and std need 3 values each, std > 0; got {self.mean} and {self.std}")

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The PIL image -> float32 C x H x W tensor function this preprocessing describes."""
        steps: list[Callable[..., Any]] = []
        if self.crop is not None:
            steps.append(_Crop(self.crop))
        if self.resize_shorter is None:
            steps.append(v2.Resize(list(self.input_size)))
        else:
            steps += [v2.Resize(self.resize_shorter), v2.CenterCrop(list(self.input_size))]
        steps += [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
            v2.ToPureTensor(),
        ]
        if self.bgr:
            steps.append(_to_bgr)
        return v2.Compose(steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for manifests and activation store keys."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`."""
        tuples = ("input_size", "crop", "mean", "std")
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


@dataclass(frozen=True)
class _Crop:
    """A picklable crop step (DataLoader workers pickle the transform)."""

    box: tuple[int, int, int, int]

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.box[2] > image.width or self.box[3] > image.height:
            raise FaceprobeError(
                f"crop box {','.join(map(str, self.box))} exceeds the {image.width}x{image.height} image;"
                " give a box inside it"
            )
        return image.crop(self.box)


def _to_bgr(x: torch.Tensor) -> torch.Tensor:
    return x.flip(0)
