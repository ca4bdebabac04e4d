"""Margin heads (ArcFace, CosFace): identity logits that demand a margin; an option beyond the thesis.

A margin head trains the network's own final ``nn.Linear`` (``fc`` of a ResNet, ``classifier`` of
SmallFaceNet): while training, a forward hook replaces that layer's logits by ``scale * cos`` between the
normalised input and the normalised class weights, with the margin applied to each sample's own class. On
leaving :func:`margin_training` the weights are normalised and the bias zeroed, so the plain network ranks
identities by cosine: the checkpoint is an ordinary model that loads, probes and classifies without the head.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.train.loop import Forward

__all__ = ["DEFAULT_MARGINS", "HEADS", "MarginHead", "final_linear", "fold_margin", "margin_training"]

HEADS = ("softmax", "arcface", "cosface")
#: The margins of the ArcFace (Deng et al., 2019) and CosFace (Wang et al., 2018) papers.
DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.35}


class MarginHead(nn.Module):
    """Target logit ``scale * cos(theta + margin)`` (ArcFace) or ``scale * (cos(theta) - margin)`` (CosFace).

    Without targets (evaluation) the logits are ``scale * cos(theta)`` for every class.
    """

    def __init__(
        self, kind: Literal["arcface", "cosface"], scale: float = 64.0, margin: float | None = None
    ) -> None:
        super().__init__()
        if kind not in DEFAULT_MARGINS:
            raise FaceprobeError(f"unknown margin head {kind!r}; choose arcface or cosface")
        self.kind = kind
        self.scale = float(scale)
        self.margin = DEFAULT_MARGINS[kind] if margin is None else float(margin)

    def forward(
        self, features: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        cos = F.linear(F.normalize(features.float()), F.normalize(weight.float()))
        if targets is None:
            return self.scale * cos
        target_cos = cos.gather(1, targets[:, None])
        if self.kind == "cosface":
            shifted = target_cos - self.margin
        else:
            sin = (1 - target_cos.square()).clamp_min(1e-7).sqrt()
            shifted = target_cos * math.cos(self.margin) - sin * math.sin(self.margin)
            # Past pi - margin, cos(theta + margin) would rise again; fall back to CosFace's linear penalty
            # there (as insightface does) so the target logit keeps decreasing with the angle.
            limit = math.cos(math.pi - self.margin)
            shifted = torch.where(
                target_cos > limit, shifted, target_cos - math.sin(math.pi - self.margin) * self.margin
            )
        return self.scale * cos.scatter(1, targets[:, None], shifted)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, scale={self.scale}, margin={self.margin}"


def final_linear(model: nn.Module) -> nn.Linear:
    """The network's identity classifier: its last ``nn.Linear`` module."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise FaceprobeError(
            f"{type(model).__name__} has no nn.Linear classifier for a margin head; use --head softmax"
        )
    return linears[-1]


@contextmanager
def margin_training(model: nn.Module, head: MarginHead) -> Iterator[Forward]:
    """Train ``model``'s final linear layer through ``head``; yields the ``forward(model, x, y)`` to use.

    Evaluation inside the block (eval mode) gets the cosine logits; on exit the hook is removed and the
    layer folded (unit-norm weights, zero bias) so that the bare model classifies by cosine too.
    """
    classifier = final_linear(model)
    targets: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return head(inputs[0], module.weight, targets[-1] if module.training and targets else None)

    def forward(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets.append(y)
        try:
            return net(x)
        finally:
            targets.clear()

    handle = classifier.register_forward_hook(hook)
    try:
        yield forward
    finally:
        handle.remove()
        fold_margin(model)


@torch.no_grad()
def fold_margin(model: nn.Module) -> None:
    """Make the final linear layer rank identities by cosine, as a margin head trained it to: unit-norm
    class weights and no bias. Applied on leaving :func:`margin_training`, and to every epoch kept on the way
    (a copy), so each checkpoint is a plain classifier."""
    classifier = final_linear(model)
    classifier.weight.copy_(F.normalize(classifier.weight))
    if classifier.bias is not None:
        classifier.bias.zero_()
