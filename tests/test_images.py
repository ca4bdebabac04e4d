"""Images as tensors: the evaluation transform and the FaceImages dataset."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceprobe.data import FaceImages, eval_transform, load_image
from faceprobe.errors import DataError


def _celeba_like(path: Path, seed: int = 0) -> Path:
    """A 178x218 image like CelebA's aligned crops: random pixels with a bright centred square."""
    pixels = np.random.default_rng(seed).integers(0, 100, (218, 178, 3), dtype=np.uint8)
    pixels[99:119, 79:99] = 255
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("size", [112, 160, 224])
def test_eval_transform_resizes_crops_and_normalises(tmp_path: Path, size: int) -> None:
    image = load_image(_celeba_like(tmp_path / "face.png"))
    x = eval_transform(size)(image)
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, size, size)
    assert -1 <= x.min() and x.max() <= 1
    # The centred square stays centred: the crop is central and the shorter side scales by 256/224.
    bright = torch.nonzero(x[0] > 0.9)
    assert bright.float().mean(dim=0).sub((size - 1) / 2).abs().max() < 1
    side = 20 * round(size * 256 / 224) / 178
    assert abs(bright[:, 0].max() - bright[:, 0].min() + 1 - side) <= 2


def test_eval_transform_uses_mean_and_std() -> None:
    white = Image.new("RGB", (64, 80), (255, 255, 255))
    assert torch.allclose(eval_transform(32)(white), torch.ones(3, 32, 32))
    x = eval_transform(32, mean=(0.25, 0.5, 0.75), std=(0.25, 0.5, 0.25))(white)
    assert torch.allclose(x[:, 0, 0], torch.tensor([3.0, 1.0, 1.0]))


def test_face_images_returns_tensors_and_targets(tmp_path: Path) -> None:
    paths = [_celeba_like(tmp_path / f"{i}.jpg", seed=i) for i in range(3)]
    images = FaceImages(paths, targets=np.array([1, 0, 1]))
    x, y = images[2]
    assert len(images) == 3
    assert x.dtype == torch.float32 and x.shape == (3, 218, 178) and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and y.item() == 1
    batch, targets = next(iter(torch.utils.data.DataLoader(images, batch_size=3)))
    assert batch.shape == (3, 3, 218, 178) and targets.tolist() == [1, 0, 1]

    unlabelled = FaceImages([str(p) for p in paths], transform=eval_transform(112))
    x, y = unlabelled[0]
    assert x.shape == (3, 112, 112) and y.item() == -1 and y.dtype == torch.int64

    several = FaceImages(paths, targets=np.eye(3, dtype=bool))
    assert several[1][1].tolist() == [0, 1, 0]

    with pytest.raises(ValueError, match="2 targets for 3 images"):
        FaceImages(paths, targets=np.array([0, 1]))


def test_unreadable_images_raise_data_error_naming_the_file(tmp_path: Path) -> None:
    not_an_image = tmp_path / "000001.jpg"
    not_an_image.write_text("hello")
    missing = tmp_path / "000002.jpg"
    for path, message in [(not_an_image, "cannot decode the image"), (missing, "image not found")]:
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}: {message}") as error:
            FaceImages([path])[0]
        assert "\n" not in str(error.value)
