"""faceprobe.allocator: freed buffers of a forward pass's size are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from faceprobe.allocator import reuse_freed_buffers

pytestmark = pytest.mark.skipif(
    not reuse_freed_buffers(), reason="the C library is not glibc; faceprobe leaves its allocator as it is"
)

#: The child scripts' start: glibc's malloc and free, through ctypes.
_LIBC = textwrap.dedent(
    """
    import ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    """
)

_FAULTS = _LIBC + textwrap.dedent(
    """
    import resource, sys
    from faceprobe.allocator import reuse_freed_buffers
    if sys.argv[1] == "reuse":
        assert reuse_freed_buffers()
    size = 64 * 2**20  # an activation of a forward's first blocks: above glibc's default mmap threshold
    def touch_and_free():
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    touch_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch_and_free()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_buffers_are_reused_without_page_faults():
    default, reused = _faults("default"), _faults("reuse")
    assert default >= 5 * 64 * 2**20 // (2 * 2**20)  # each block faulted in again (even in 2 MiB pages)
    assert reused < default / 20


_RETURNED = _LIBC + textwrap.dedent(
    """
    from faceprobe.allocator import REUSED_BELOW, reuse_freed_buffers
    assert reuse_freed_buffers()
    def resident():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    size = REUSED_BELOW + 64 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    held = resident()
    libc.free(block)
    print(held - resident(), size)
    """
)


def test_layer_sized_blocks_go_back_to_the_system_when_freed():
    """A layer's rows held in RAM are above the threshold: freeing them still gives the memory back."""
    done = subprocess.run([sys.executable, "-c", _RETURNED], capture_output=True, text=True, check=True)
    returned, size = map(int, done.stdout.split())
    assert returned >= 0.95 * size
