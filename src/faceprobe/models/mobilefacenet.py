"""MobileFaceNet (Chen et al. 2018), with the parameter names of its common PyTorch port.

The layout is that of InsightFace_Pytorch's ``MobileFaceNet`` (``conv1, conv2_dw, conv_23, conv_3, conv_34,
conv_4, conv_45, conv_5, conv_6_sep, conv_6_dw, linear, bn``), so its checkpoints load strictly. Stages of
the paper's Table 1: a 3x3 stride-2 conv and a depthwise conv (64), inverted-residual bottlenecks (64, 128,
128 channels), a 1x1 conv to 512, a global depthwise conv over the whole final map (7x7 at 112x112, 7x6 at
112x96), a linear 1x1 projection and batch norm: the 128-d embedding. In a residual bottleneck
(:class:`DepthWise` with ``residual=True``) ``<block>.project`` is the branch before the add and the block's
own output is the post-skip output.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["DepthWise", "MobileFaceNet"]


class ConvBlock(nn.Sequential):
    """conv -> bn -> PReLU (``linear=True``: no activation, the paper's linear bottleneck)."""

    #: The layer kind :mod:`faceprobe.extract` reports for this module's output.
    probe_kind = "conv"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | tuple[int, int] = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        linear: bool = False,
    ) -> None:
        layers = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_channels),
        )
        if not linear:
            layers["prelu"] = nn.PReLU(out_channels)
        super().__init__(layers)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``expanded``, 3x3 depthwise, linear 1x1 project (+ input)."""

    def __init__(
        self, in_channels: int, out_channels: int, expanded: int, stride: int = 1, residual: bool = False
    ) -> None:
        super().__init__()
        self.conv = ConvBlock(in_channels, expanded)
        self.conv_dw = ConvBlock(expanded, expanded, 3, stride, padding=1, groups=expanded)
        self.project = ConvBlock(expanded, out_channels, linear=True)
        self.residual = residual
        #: The child whose output is the residual branch just before the add (see faceprobe.extract).
        self.residual_end = "project" if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


def _residual(channels: int, blocks: int, expanded: int) -> nn.Sequential:
    # A plain container named like the port's Residual module, so its blocks are blocks of their own.
    stage = [DepthWise(channels, channels, expanded, residual=True) for _ in range(blocks)]
    return nn.Sequential(OrderedDict(model=nn.Sequential(*stage)))


class MobileFaceNet(nn.Module):
    """MobileFaceNet for 112x112 or 112x96 faces (any multiple of 16): an ``embedding_dim`` embedding."""

    embedding_layer = "bn"

    def __init__(self, embedding_dim: int = 128, input_size: tuple[int, int] = (112, 112)) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, stride=2, padding=1)
        self.conv2_dw = ConvBlock(64, 64, 3, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, stride=2)
        self.conv_3 = _residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, stride=2)
        self.conv_4 = _residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, stride=2)
        self.conv_5 = _residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)
        final = (input_size[0] // 16, input_size[1] // 16)
        self.conv_6_dw = ConvBlock(512, 512, final, groups=512, linear=True)
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(512, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x = self.conv_45(self.conv_4(self.conv_34(self.conv_3(x))))
        x = self.conv_6_dw(self.conv_6_sep(self.conv_5(x)))
        return self.bn(self.linear(self.conv_6_flatten(x)))
