"""The C allocator's reuse of freed buffers, for processes that run many forward passes.

glibc's ``malloc`` hands every block above its mmap threshold (32 MiB at most, by default) to a fresh
``mmap`` and returns it to the kernel on ``free``. A CPU forward pass allocates and frees activations of tens
of MiB (ResNet-50's first blocks, 64 images at 112x112: 51 MiB each), so every batch faults every page of
them in again, zeroed by the kernel: about a quarter of a bare forward's wall time on a virtual machine
(docs/benchmarks.md). PyTorch's CPU tuning guide suggests swapping in jemalloc or tcmalloc for the same
reason; a process that is already running can instead raise glibc's thresholds, which is what this does.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

import numpy as np

__all__ = ["REUSED_BELOW", "ReusedArrays", "reuse_freed_buffers"]

#: Blocks below this size are carved from the heap and reused after ``free``; larger ones (a layer's rows
#: held in RAM) still get their own mapping, which ``free`` gives back to the system at once.
REUSED_BELOW = 256 * 2**20

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3


@functools.cache
def reuse_freed_buffers() -> bool:
    """Let this process's glibc reuse freed blocks below :data:`REUSED_BELOW` instead of unmapping them;
    whether it took effect (False off glibc: macOS, Windows, musl).

    The heap then keeps up to twice that size of free space at its top instead of trimming it, so the
    resident memory can stay that much above what is in use. Process-wide and idempotent: the
    ``faceprobe`` command calls it at start, each Dask task of a study in its worker; a script that
    imports faceprobe as a library may call it itself.
    """
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded, the C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has mallopt, and ignores it)
    except (OSError, TypeError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSED_BELOW) and mallopt(_M_TRIM_THRESHOLD, 2 * REUSED_BELOW))


class ReusedArrays:
    """Memory of arrays no longer needed, lent again to the next ones: for large arrays made one after
    another, such as the layers of a unit held piece by piece (:mod:`faceprobe.extract.pieces`).

    A fresh array's pages are faulted in by its first writes, which on a virtual machine that hands idle
    memory back to its host costs far more than the writes; a freed page not reused within seconds goes
    back and costs as much again (docs/benchmarks.md). An array is taken back only when nothing else holds
    a view of it (its owner's reference count), and at most ``keep`` free buffers are kept, the largest.
    """

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep
        self.free: list[np.ndarray] = []

    def take(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array, in the smallest free buffer that holds it, else in fresh memory."""
        size = math.prod(shape) * np.dtype(dtype).itemsize
        fitting = [buffer for buffer in self.free if buffer.nbytes >= size]
        if fitting:
            buffer = min(fitting, key=lambda b: b.nbytes)
            self.free.remove(buffer)
        else:
            buffer = np.empty(size, np.uint8)
        return buffer[:size].view(dtype).reshape(shape)

    def give(self, arrays: dict[str, np.ndarray], name: str) -> None:
        """Drop ``arrays[name]`` (from :meth:`take`); its memory is kept for reuse when nothing else holds a
        view of it."""
        owner = arrays.pop(name).base
        if owner is None or sys.getrefcount(owner) > 2:  # 2: ``owner`` and getrefcount's argument
            return
        self.free = sorted([*self.free, owner], key=lambda b: b.nbytes)[-self.keep :]
