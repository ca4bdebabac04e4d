"""faceprobe: measure where face-recognition networks encode facial attributes.

The stable public API is :class:`PLS` (NIPALS partial least squares with VIP scores, for very wide float32
layer outputs) and :class:`Probe` (PLS projection + QDA, a scikit-learn classifier), with its kin for targets
beyond binary ones: :class:`MulticlassProbe` (PLS-DA + QDA, balanced accuracy) and :class:`RegressionProbe`
(PLS regression, R^2 and MAE).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faceprobe.pls import (
        PLS,
        SharedFit,
        channel_vip,
        fit_shared,
        fit_transform_shared,
        top_k_channels,
        top_k_neurons,
        transform_shared,
        vip_scores,
    )
    from faceprobe.probe import MulticlassProbe, Probe, RegressionProbe

__version__ = "0.1.0"

#: Where each public name lives; imported on first use, so `faceprobe --help` need not load SciPy or torch.
_LAZY = {
    "PLS": "faceprobe.pls",
    "channel_vip": "faceprobe.pls",
    "SharedFit": "faceprobe.pls",
    "fit_shared": "faceprobe.pls",
    "fit_transform_shared": "faceprobe.pls",
    "top_k_channels": "faceprobe.pls",
    "top_k_neurons": "faceprobe.pls",
    "transform_shared": "faceprobe.pls",
    "vip_scores": "faceprobe.pls",
    "Probe": "faceprobe.probe",
    "MulticlassProbe": "faceprobe.probe",
    "RegressionProbe": "faceprobe.probe",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'faceprobe' has no attribute {name!r}")


__all__ = [
    "PLS",
    "MulticlassProbe",
    "Probe",
    "RegressionProbe",
    "SharedFit",
    "__version__",
    "channel_vip",
    "fit_shared",
    "fit_transform_shared",
    "top_k_channels",
    "top_k_neurons",
    "transform_shared",
    "vip_scores",
]
