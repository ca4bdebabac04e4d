"""Layer activations of a network: which layers there are, and their outputs for a set of images."""

from faceprobe.extract.catalogue import catalogue, select_layers
from faceprobe.extract.hooks import LayerInfo, block_layers, capture, describe_layers, extract, stream_outputs

__all__ = [
    "LayerInfo",
    "block_layers",
    "capture",
    "catalogue",
    "describe_layers",
    "extract",
    "select_layers",
    "stream_outputs",
]
