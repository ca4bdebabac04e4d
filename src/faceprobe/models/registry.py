"""Face-recognition networks by name: how to build each one and what preprocessing it expects.

:data:`ARCHITECTURES` maps a name to a :class:`ModelSpec`. Checkpoints record that name, so
:mod:`faceprobe.models.checkpoint` rebuilds a saved model through :func:`build_model`.

torchvision networks keep their ImageNet form (1000-way head) unless ``num_classes`` is given; then the last
linear layer becomes a face head: a plain ``nn.Sequential`` of ``embedding`` (:class:`Embedding`: linear +
batch norm, the face embedding) and ``classifier`` (identity logits), so ``resnet50`` gets ``fc.embedding``
and ``fc.classifier``. Face backbones (IResNet, MobileFaceNet) end in their embedding and have no classifier.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torchvision
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.models.iresnet import iresnet
from faceprobe.models.mobilefacenet import MobileFaceNet
from faceprobe.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, thesis_resize
from faceprobe.models.small import SmallFaceNet

__all__ = ["ARCHITECTURES", "Embedding", "ModelSpec", "build_model", "did_you_mean", "face_head", "spec_of"]

#: The builder signature: ``(num_classes or None, input size (h, w), **kwargs) -> nn.Module``.
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture, and the preprocessing and weights it comes with.

    ``imagenet`` names the torchvision weights enum member (``"ResNet50_Weights.IMAGENET1K_V1"``) that
    ``weights="imagenet"`` reads, or None where there are none; ``head`` is the layer a face head replaces
    when ``num_classes`` is given (the ImageNet weights skip it then).
    """

    builder: Builder
    preprocessing: Preprocessing
    imagenet: str | None = None
    head: str | None = None


class Embedding(nn.Sequential):
    """Linear -> batch norm: the face embedding that recognition compares."""

    #: The layer kind :mod:`faceprobe.extract` reports for this module's output.
    probe_kind = "embedding"

    def __init__(self, in_features: int, embedding_dim: int) -> None:
        super().__init__(
            OrderedDict(
                linear=nn.Linear(in_features, embedding_dim, bias=False), bn=nn.BatchNorm1d(embedding_dim)
            )
        )


def face_head(in_features: int, num_classes: int, embedding_dim: int = 512) -> nn.Sequential:
    """``embedding`` (:class:`Embedding`) -> ``classifier`` (identity logits), a plain container."""
    return nn.Sequential(
        OrderedDict(
            embedding=Embedding(in_features, embedding_dim), classifier=nn.Linear(embedding_dim, num_classes)
        )
    )


def _torchvision(name: str, head: str, embedding: str, imagenet: str) -> ModelSpec:
    """torchvision's ``name``, whose last linear layer ``head`` becomes a face head given ``num_classes``.

    ``embedding`` is the layer read as the embedding of the ImageNet form (the input of the last linear).
    """

    def build(num_classes: int | None, input_size: tuple[int, int], embedding_dim: int = 512) -> nn.Module:
        model = torchvision.models.get_model(name, weights=None)
        if num_classes is not None:
            parent, _, child = head.rpartition(".")
            owner = model.get_submodule(parent)
            in_features = owner.get_submodule(child).in_features
            owner.register_module(child, face_head(in_features, num_classes, embedding_dim))
        model.embedding_layer = embedding if num_classes is None else f"{head}.embedding"  # type: ignore[assignment]
        return model

    imagenet_input = Preprocessing((224, 224), None, thesis_resize((224, 224)), IMAGENET_MEAN, IMAGENET_STD)
    return ModelSpec(build, imagenet_input, imagenet, head)


def _small(num_classes: int | None, input_size: tuple[int, int], **kwargs: object) -> nn.Module:
    """SmallFaceNet always has its classifier: 100 identities (the synthetic default) unless told."""
    return SmallFaceNet(100 if num_classes is None else num_classes, **kwargs)  # type: ignore[arg-type]


def _iresnet(depth: int) -> Builder:
    def build(num_classes: int | None, input_size: tuple[int, int], embedding_dim: int = 512) -> nn.Module:
        _no_classifier(f"iresnet{depth}", num_classes)
        return iresnet(depth, input_size, embedding_dim)

    return build


def _mobilefacenet(
    num_classes: int | None, input_size: tuple[int, int], embedding_dim: int = 128
) -> nn.Module:
    _no_classifier("mobilefacenet", num_classes)
    return MobileFaceNet(embedding_dim, input_size)


def _no_classifier(name: str, num_classes: int | None) -> None:
    if num_classes is not None:
        raise FaceprobeError(f"{name} is an embedding backbone without a classifier; leave num_classes unset")


_FACE_112 = Preprocessing((112, 112))  # aligned 112x112 crops, mean = std = 0.5 (ArcFace, MobileFaceNet)

ARCHITECTURES: dict[str, ModelSpec] = {
    "small": ModelSpec(_small, Preprocessing((112, 112), None, thesis_resize((112, 112)))),
    **{
        f"resnet{d}": _torchvision(f"resnet{d}", "fc", "avgpool", f"ResNet{d}_Weights.IMAGENET1K_V1")
        for d in (18, 34, 50)
    },
    "mobilenet_v2": _torchvision(
        "mobilenet_v2", "classifier.1", "classifier.0", "MobileNet_V2_Weights.IMAGENET1K_V1"
    ),
    "vgg16": _torchvision("vgg16", "classifier.6", "classifier.4", "VGG16_Weights.IMAGENET1K_V1"),
    **{f"iresnet{d}": ModelSpec(_iresnet(d), _FACE_112) for d in (18, 34, 50, 100)},
    "mobilefacenet": ModelSpec(_mobilefacenet, _FACE_112),
}


def build_model(
    name: str, num_classes: int | None = None, input_size: tuple[int, int] | None = None, **kwargs: object
) -> nn.Module:
    """A freshly initialised network ``name`` (a key of :data:`ARCHITECTURES`).

    ``num_classes`` sizes the identity classifier; ``input_size`` (default: the registry's) matters to
    networks whose head depends on it (IResNet, MobileFaceNet); ``kwargs`` go to the builder.
    """
    spec = spec_of(name)
    return spec.builder(num_classes, input_size or spec.preprocessing.input_size, **kwargs)


def spec_of(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``, or an error listing the known names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FaceprobeError(
            f"unknown model {name!r}{did_you_mean(name, ARCHITECTURES)}; choose one of: {known}, or give a "
            "factory as package.module:function"
        ) from None


def did_you_mean(name: str, known: object) -> str:
    """`` (did you mean X?)`` naming the closest of ``known`` names (case aside), or ``""`` when none is
    close: ``ResNet-50`` and ``resnet5`` both lead to resnet50."""
    names = sorted(map(str, known))  # type: ignore[call-overload]
    folded = {n.lower().replace("-", "").replace("_", ""): n for n in names}
    key = name.lower().replace("-", "").replace("_", "")
    close = [folded[c] for c in difflib.get_close_matches(key, list(folded), n=2, cutoff=0.6)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""
