"""BatchNorms folded into the convolutions before them: the same observed outputs, the model given back."""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from torch import nn

from faceprobe.extract import extract
from faceprobe.extract.folding import foldable_pairs, folded_batchnorms


def _resnet18() -> nn.Module:
    """ResNet-18 with BatchNorm statistics and affine parameters away from the identity."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in model.state_dict().items()}


def test_folded_network_computes_the_same_and_is_given_back():
    model = _resnet18()
    x = torch.randn(3, 3, 32, 32)
    names = ["layer1.0", "layer2.1", "layer4.1", "fc"]
    plain = extract(model, x, names)
    before = _snapshot(model)
    pairs = foldable_pairs(model)
    assert ("conv1", "bn1") in pairs and ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs
    assert len(pairs) == 20  # the stem, two per block, three downsamples
    with folded_batchnorms(model, names):
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 0
        assert model.layer1[0].conv1.bias is not None
        folded = extract(model, x, names)
    for name in names:
        scale = np.abs(plain[name]).max()
        np.testing.assert_allclose(folded[name], plain[name], rtol=0, atol=1e-5 * scale, err_msg=name)
    assert any(not np.array_equal(folded[name], plain[name]) for name in names)  # folded: its own rounding
    after = model.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert isinstance(model.bn1, nn.BatchNorm2d) and model.layer1[0].conv1.bias is None


def test_observed_and_hooked_modules_are_not_folded():
    model = _resnet18()
    x = torch.randn(2, 3, 32, 32)
    seen = []
    model.layer3[0].bn2.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    keep = ["conv1", "layer1.0.bn1", "layer2.0.conv2"]
    plain = extract(model, x, keep)
    with folded_batchnorms(model, keep):
        assert isinstance(model.bn1, nn.BatchNorm2d)  # conv1's output is observed before its BatchNorm
        assert isinstance(model.layer1[0].bn1, nn.BatchNorm2d)
        assert isinstance(model.layer2[0].bn2, nn.BatchNorm2d)
        assert isinstance(model.layer3[0].bn2, nn.BatchNorm2d)  # a hook of its own
        assert not isinstance(model.layer1[0].bn2, nn.BatchNorm2d)
        folded = extract(model, x, keep)
    np.testing.assert_array_equal(folded["conv1"], plain["conv1"])  # nothing before it changed
    np.testing.assert_allclose(folded["layer2.0.conv2"], plain["layer2.0.conv2"], rtol=1e-4, atol=1e-4)
    assert seen


class _Shared(nn.Module):
    """A convolution whose output feeds its BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.bn(h) + h + self.bn2(self.conv2(h))


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on values: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


class _Standardised(nn.Conv2d):
    """A convolution that standardises its weight in its own forward, so that scaling the weight changes
    nothing; it poses as a library module, which torch.fx keeps whole, as it does ``nn.Conv2d``."""

    __module__ = "torch.nn.modules.conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def test_only_a_convolution_feeding_its_batchnorm_alone_is_folded():
    assert foldable_pairs(_Shared()) == [("conv2", "bn2")]
    model = nn.Sequential(_Standardised(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    assert foldable_pairs(model) == [("2", "3")]  # the subclass's pair would fold into a wrong network
    assert foldable_pairs(_Untraceable()) == []
    model = _Untraceable().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    with folded_batchnorms(model, []), torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), expected.numpy())


def test_a_model_in_training_mode_is_folded_in_eval_mode_and_given_back_in_its_modes():
    model = _resnet18().train()
    model.fc.eval()
    with folded_batchnorms(model, []):
        assert not model.training
    assert model.training and model.layer1.training and not model.fc.training
