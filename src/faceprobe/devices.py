"""Where the forward passes run, in which precision, and how many images fit in one batch there.

Nothing needs a GPU; ``auto`` takes CUDA, then Apple's MPS, then the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from faceprobe.errors import FaceprobeError

__all__ = ["CPU_BATCH_SIZE", "PRECISIONS", "autocast", "channels_last", "fit_batch_size", "resolve_device"]

#: Forward-pass precisions: full float32, or bfloat16 autocast (about twice the throughput on recent GPUs).
PRECISIONS = ("float32", "bfloat16")

#: Batch size on the CPU: large enough to amortise per-batch overhead, small enough for 224x224 ResNet50.
CPU_BATCH_SIZE = 32


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` (or ``cuda:N``) or ``mps`` as a device that is present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FaceprobeError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    present = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }.get(device.type)
    if present is None:
        raise FaceprobeError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if not present:
        raise FaceprobeError(f"device {name!r} is not available on this machine; use --device auto or cpu")
    return device


def fit_batch_size(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device,
    *,
    fraction: float = 0.5,
    limit: int = 512,
) -> int:
    """The batch size whose inference forward pass fills about ``fraction`` of the device's free memory.

    On CUDA it measures the peak memory of a 2-image forward (activations are what grow with the batch)
    and scales it to the free memory, between 1 and ``limit``; elsewhere it is :data:`CPU_BATCH_SIZE`.
    Hooks that copy activations off the device do not add to the device's memory.
    """
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    model.to(device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        model(torch.zeros(2, *input_shape, device=device))
    per_image = max(1, (torch.cuda.max_memory_allocated(device) - before) // 2)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(limit, fraction * free // per_image)))


def autocast(device: torch.device | str, precision: str = "float32") -> contextlib.AbstractContextManager:
    """A context in which forward passes on ``device`` run in ``precision`` (see :data:`PRECISIONS`).

    ``bfloat16`` is ``torch.autocast``: convolutions and matrix products run in bfloat16 with float32
    accumulation, everything else stays float32; layer outputs come out as bfloat16 or float32 tensors.
    """
    if precision not in PRECISIONS:
        raise FaceprobeError(f"unknown precision {precision!r}; use {' or '.join(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FaceprobeError(f"{device} has no bfloat16 support; use precision float32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def channels_last(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """On the CPU, the model's 4-D weights in channels-last memory format while the block runs; yields
    whether its 4-D inputs should be made channels-last too.

    The CPU's convolution kernels (oneDNN) run faster on channels-last tensors than on contiguous ones
    (docs/benchmarks.md); the values are the same up to float rounding, and a layer's output still flattens
    in C, H, W order, since flattening follows the logical shape. Each weight that changed format gets its
    own back afterwards, so a caller's model leaves as it came. Elsewhere (GPUs, not measured here) nothing
    changes.
    """
    tensors = [*model.parameters(), *model.buffers()]
    if device.type != "cpu" or not any(t.dim() == 4 for t in tensors):
        yield False
        return
    changed = [t for t in tensors if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last)]
    with torch.no_grad():  # a weight's data swapped in place, outside any inference mode: it stays trainable
        for t in changed:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        with torch.no_grad():
            for t in changed:
                t.data = t.data.contiguous()
