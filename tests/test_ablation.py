"""In-forward ablation: the chosen units are zero, later layers change, the rest does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprobe.errors import FaceprobeError
from faceprobe.extract import extract
from faceprobe.extract.ablation import ablate, channel_mask, neuron_mask
from faceprobe.models import SmallFaceNet

LAYERS = [
    "backbone.stem",
    "backbone.stage1.0.residual",
    "backbone.stage1.0",
    "backbone.stage2.0",
    "embedding",
]
TARGET = "backbone.stage1.0"  # 16 x 8 x 8 at 32x32


@pytest.fixture
def model_and_images():
    torch.manual_seed(0)
    return SmallFaceNet(3, embedding_dim=8, widths=(8, 16, 24)), torch.randn(6, 3, 32, 32)


@pytest.mark.parametrize(
    ("kwargs", "zeroed"),
    [
        ({"neurons": [0, 5, 200, 1023]}, np.array([0, 5, 200, 1023])),
        ({"channels": [2, 15]}, np.r_[2 * 64 : 3 * 64, 15 * 64 : 16 * 64]),  # C,H,W: a channel is contiguous
        ({"neurons": [1], "channels": [3]}, np.r_[1, 3 * 64 : 4 * 64]),
    ],
)
def test_ablation_zeroes_the_units_and_changes_only_later_layers(model_and_images, kwargs, zeroed):
    model, x = model_and_images
    before = extract(model, x, LAYERS)
    with ablate(model, TARGET, **kwargs):
        after = extract(model, x, LAYERS)
    kept = np.setdiff1d(np.arange(before[TARGET].shape[1]), zeroed)
    assert (after[TARGET][:, zeroed] == 0).all() and (before[TARGET][:, zeroed] != 0).any()
    np.testing.assert_array_equal(after[TARGET][:, kept], before[TARGET][:, kept])
    for earlier in LAYERS[:2]:  # the ablated layer's inputs, including its own residual branch
        np.testing.assert_array_equal(after[earlier], before[earlier])
    for later in LAYERS[3:]:
        assert not np.array_equal(after[later], before[later]), later
    assert all(not m._forward_hooks for m in model.modules())
    np.testing.assert_array_equal(extract(model, x, LAYERS)[TARGET], before[TARGET])  # removed on exit


def test_ablation_survives_an_in_place_relu_after_the_layer(model_and_images):
    model, x = model_and_images  # the stem's ReLU is in place; the mask must still hold downstream
    with ablate(model, "backbone.stem.1", channels=range(8)):
        out = extract(model, x, ["backbone.stem"])["backbone.stem"]
    assert (out == 0).all()


def test_masks_and_errors(model_and_images):
    model, _ = model_and_images
    mask = neuron_mask((2, 2, 2), [0, 7])
    assert mask.shape == (2, 2, 2) and mask.flatten().tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
    assert channel_mask((3, 2), [1]).tolist() == [[1, 1], [0, 0], [1, 1]]
    with pytest.raises(FaceprobeError, match=r"neuron indices must lie in \[0, 8\)"):
        neuron_mask((2, 2, 2), [8])
    with pytest.raises(FaceprobeError, match=r"channel indices must lie in \[0, 3\)"):
        channel_mask((3, 2), [-1])
    with pytest.raises(FaceprobeError, match=r"no layer 'backbone\.stage9'"):
        with ablate(model, "backbone.stage9", neurons=[0]):
            pass
    with pytest.raises(FaceprobeError, match=r"neuron indices must lie in \[0, 1024\)"):
        with ablate(model, TARGET, neurons=[5000]):
            model(torch.randn(1, 3, 32, 32))
    assert all(not m._forward_hooks for m in model.modules())
