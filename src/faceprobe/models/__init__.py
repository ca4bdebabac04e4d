"""Face-recognition networks: the registry, backbones, weight origins and preprocessing.

``load_model(architecture, weights)`` is the entry point: it returns a :class:`LoadedModel` (module in eval
mode, weights digest, :class:`Preprocessing`); :data:`ARCHITECTURES` lists the names it knows.
"""

from __future__ import annotations

from faceprobe.models.loading import LoadedModel, load_model
from faceprobe.models.preprocessing import Preprocessing
from faceprobe.models.registry import ARCHITECTURES, ModelSpec, build_model
from faceprobe.models.small import SmallFaceNet

__all__ = [
    "ARCHITECTURES",
    "LoadedModel",
    "ModelSpec",
    "Preprocessing",
    "SmallFaceNet",
    "build_model",
    "load_model",
]
