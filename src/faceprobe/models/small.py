"""SmallFaceNet: a residual face-recognition CNN small enough to train on a laptop CPU in minutes.

It has the face-recognition form backbone -> embedding -> identity classifier of the networks the thesis
probes (ResNet-50, MobileNetV2, VGG16), so every layer kind they have, a residual branch and the post-skip
output of a residual block among them, can be probed on a model that trains in the demo. Each of those
outputs is a module of its own, so a forward hook on it sees exactly that tensor.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from faceprobe.errors import FaceprobeError

__all__ = ["BasicBlock", "EmbeddingHead", "ResidualBranch", "SmallFaceNet"]


class ResidualBranch(nn.Sequential):
    """The residual branch of a :class:`BasicBlock` (conv-bn-relu-conv-bn): what the skip adds to."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False),
                bn1=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(inplace=True),
                conv2=nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                bn2=nn.BatchNorm2d(out_channels),
            )
        )


class BasicBlock(nn.Module):
    """torchvision's BasicBlock with the residual branch, the shortcut and the final ReLU as separate modules.

    ``relu(residual(x) + shortcut(x))``; the shortcut is a strided 1x1 convolution with batch norm when the
    shape changes, else the identity. The block's own output is the post-skip output.
    """

    #: The child whose output is the residual branch just before the add (see faceprobe.extract).
    residual_end = "residual"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = ResidualBranch(in_channels, out_channels, stride)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        # Zero-init the last BN so every block starts as (nearly) the identity: trains faster from scratch.
        nn.init.zeros_(self.residual.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


class EmbeddingHead(nn.Module):
    """Global average pool -> linear -> batch norm: the face embedding that recognition compares."""

    #: The layer kind :mod:`faceprobe.extract` reports for this module's output.
    probe_kind = "embedding"

    def __init__(self, in_channels: int, embedding_dim: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, embedding_dim, bias=False)
        self.bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(torch.flatten(self.pool(x), 1)))


class SmallFaceNet(nn.Module):
    """A small residual CNN for identity classification of 112x112 (any size >= 32) RGB faces.

    ``backbone`` is a stride-2 conv-BN-ReLU stem (``widths[0]`` channels) followed by one stage per
    remaining width, each of ``blocks_per_stage`` :class:`BasicBlock` whose first block halves the
    resolution; ``embedding`` is an :class:`EmbeddingHead`; ``classifier`` maps the embedding to identity
    logits. The default widths train at about 350 images/s (112x112) or 1,500 images/s (64x64) forward
    and backward on 2 CPU cores, so the demo trains it in about a minute.

    Args:
        num_identities: classes of the identity classifier.
        embedding_dim: size of the face embedding.
        widths: channels of the stem, then of each stage.
        blocks_per_stage: residual blocks in each stage.
    """

    embedding_layer = "embedding"

    def __init__(
        self,
        num_identities: int,
        embedding_dim: int = 128,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if num_identities < 1 or embedding_dim < 1 or len(widths) < 2 or blocks_per_stage < 1:
            raise FaceprobeError(
                "SmallFaceNet needs num_identities >= 1, embedding_dim >= 1, >= 2 widths and"
                f" blocks_per_stage >= 1; got {num_identities}, {embedding_dim}, {widths}, {blocks_per_stage}"
            )
        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=Conv2dNormActivation(3, widths[0], stride=2))
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths), start=1):
            blocks = [BasicBlock(c_in, c_out, stride=2)]
            blocks += [BasicBlock(c_out, c_out) for _ in range(blocks_per_stage - 1)]
            layers[f"stage{i}"] = nn.Sequential(*blocks)
        self.backbone = nn.Sequential(layers)
        self.embedding = EmbeddingHead(widths[-1], embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_identities)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The face embedding of a batch (what verification compares), before the identity classifier."""
        return self.embedding(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
