"""Names of :mod:`faceprobe.extract`, for type checkers; ``__init__.py`` imports each on first use."""

from .catalogue import catalogue as catalogue, select_layers as select_layers
from .hooks import (
    LayerInfo as LayerInfo,
    block_layers as block_layers,
    capture as capture,
    describe_layers as describe_layers,
    extract as extract,
    stream_outputs as stream_outputs,
)
