"""IResNet, the ArcFace backbone (Deng et al. 2019; Duta et al. 2020), with insightface's parameter names.

Written from the papers' description so that the state dicts of insightface's ``iresnet`` checkpoints (and of
the many projects that copied it) load strictly: ``conv1, bn1, prelu, layer1..4`` of :class:`IBasicBlock`
(``bn1, conv1, bn2, prelu, conv2, bn3, downsample``), then ``bn2, dropout, fc, features``. A block computes
``bn3(conv2(prelu(bn2(conv1(bn1(x)))))) + shortcut(x)`` with no activation after the add, so its output is
the post-skip output and ``<block>.bn3`` is the residual branch before the add.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "iresnet"]

_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    """The pre-activation style block of IResNet: BN-conv-BN-PReLU-conv-BN plus the shortcut."""

    #: The child whose output is the residual branch just before the add (see faceprobe.extract).
    residual_end = "bn3"

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=1e-5)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet for ``input_size`` (112x112 in ArcFace) faces, giving an ``embedding_dim`` embedding.

    Four stages halve the resolution, so ``fc`` flattens a 512 x H/16 x W/16 map; ``features`` (BatchNorm1d
    with its scale frozen at 1, as insightface trains it) is the embedding.
    """

    embedding_layer = "features"

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        embedding_dim: int = 512,
        input_size: tuple[int, int] = (112, 112),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        in_channels = 64
        for i, (width, blocks) in enumerate(zip(widths, layers, strict=True), start=1):
            stage = [IBasicBlock(in_channels, width, stride=2)]
            stage += [IBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            in_channels = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(dropout, inplace=True)
        self.fc = nn.Linear(512 * (input_size[0] // 16) * (input_size[1] // 16), embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet(depth: int, input_size: tuple[int, int] = (112, 112), embedding_dim: int = 512) -> IResNet:
    """IResNet-18, -34, -50 or -100."""
    return IResNet(_DEPTHS[depth], embedding_dim, input_size)
