"""The public names of :mod:`faceprobe`, for type checkers; ``__init__.py`` imports each on first use."""

from .pls import (
    PLS as PLS,
    SharedFit as SharedFit,
    channel_vip as channel_vip,
    fit_shared as fit_shared,
    fit_transform_shared as fit_transform_shared,
    top_k_channels as top_k_channels,
    top_k_neurons as top_k_neurons,
    transform_shared as transform_shared,
    vip_scores as vip_scores,
)
from .probe import MulticlassProbe as MulticlassProbe, Probe as Probe, RegressionProbe as RegressionProbe

__version__: str
