"""Face-recognition networks by name.

:data:`BUILDERS` maps an architecture name to a builder ``(num_classes, **kwargs) -> nn.Module``.
Checkpoints record that name, so :mod:`faceprobe.models.checkpoint` rebuilds a saved model through
:func:`build_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.models.small import SmallFaceNet

__all__ = ["BUILDERS", "SmallFaceNet", "build_model"]

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small": SmallFaceNet,
}


def build_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """A freshly initialised network ``name`` with a ``num_classes``-way identity classifier."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(BUILDERS))
        raise FaceprobeError(f"unknown model {name!r}; choose one of: {known}") from None
    return builder(num_classes, **kwargs)
