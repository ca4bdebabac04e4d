"""faceprobe: measure where face-recognition networks encode facial attributes.

The stable public API is :class:`PLS` (NIPALS partial least squares with VIP scores, for very wide float32
layer outputs) and :class:`Probe` (PLS projection + QDA, a scikit-learn classifier), with its kin for targets
beyond binary ones: :class:`MulticlassProbe` (PLS-DA + QDA, balanced accuracy) and :class:`RegressionProbe`
(PLS regression, R^2 and MAE).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# The passes' products run in MKL (torch's CPU matmul). On some CPUs (AVX-512 ones, AMD's among them) MKL's
# rounding depends on where a block lies in memory, so the same rows held in RAM, read from the store or
# streamed in batches gave sums that differ in the last bit. Its strict reproducible mode takes the same
# time here (docs/benchmarks.md) and makes the results independent of the source, as the tests demand. MKL
# reads the variable when it starts, so it is set on import, before torch runs anything; a user's own
# setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

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
