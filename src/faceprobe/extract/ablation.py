"""In-forward ablation: zero chosen neurons or channels of a layer while the network runs.

The thesis's ablation study (Table 5.4) asks whether later layers rely on a layer's top-VIP neurons: zero
them inside the forward pass, re-extract the later layers, and probe again. The hook replaces the layer's
output by ``output * mask`` (a new tensor, so in-place operations of the model cannot undo it), which leaves
every earlier layer untouched and changes the later ones only through the zeroed units.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import resolve_layers

__all__ = ["ablate", "channel_mask", "neuron_mask"]


def neuron_mask(shape: Sequence[int], neurons: ArrayLike) -> torch.Tensor:
    """A (shape) tensor of ones with zeros at the flat (C,H,W-order) indices ``neurons``."""
    size = int(np.prod(shape))
    idx = np.asarray(neurons, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise FaceprobeError(f"neuron indices must lie in [0, {size}) for a layer of shape {tuple(shape)}")
    mask = torch.ones(size)
    mask[torch.from_numpy(idx)] = 0
    return mask.view(*shape)


def channel_mask(shape: Sequence[int], channels: ArrayLike) -> torch.Tensor:
    """A (shape) tensor of ones with whole channels (the first axis) zeroed."""
    idx = np.asarray(channels, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
        raise FaceprobeError(f"channel indices must lie in [0, {shape[0]}) for a layer shaped {tuple(shape)}")
    mask = torch.ones(*shape)
    mask[torch.from_numpy(idx)] = 0
    return mask


@contextmanager
def ablate(
    model: nn.Module, layer: str, neurons: ArrayLike | None = None, channels: ArrayLike | None = None
) -> Iterator[None]:
    """While active, the output of ``layer`` has the given neurons (flat indices) and channels zeroed.

    Example::

        with ablate(model, "layer2.1", neurons=top_vip[: len(top_vip) // 20]):
            later = extract(model, loader, ["layer3.0", "layer4.0"])
    """
    module = resolve_layers(model, [layer])[layer]
    masks: dict[torch.Size, torch.Tensor] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise FaceprobeError(f"layer {layer!r} does not output a tensor, so it cannot be ablated")
        shape = output.shape[1:]
        if shape not in masks:
            mask = torch.ones(*shape)
            if neurons is not None:
                mask = mask * neuron_mask(shape, neurons)
            if channels is not None:
                mask = mask * channel_mask(shape, channels)
            masks[shape] = mask.to(device=output.device, dtype=output.dtype)
        return output * masks[shape]

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
