"""faceprobe: measure where face-recognition networks encode facial attributes.

The stable public API is :class:`PLS` (NIPALS partial least squares with VIP scores, for very wide float32
layer outputs) and :class:`Probe` (PLS projection + QDA, a scikit-learn classifier).
"""

from faceprobe.pls import (
    PLS,
    channel_vip,
    fit_shared,
    top_k_channels,
    top_k_neurons,
    transform_shared,
    vip_scores,
)
from faceprobe.probe import Probe

__version__ = "0.1.0"

__all__ = [
    "PLS",
    "Probe",
    "__version__",
    "channel_vip",
    "fit_shared",
    "top_k_channels",
    "top_k_neurons",
    "transform_shared",
    "vip_scores",
]
