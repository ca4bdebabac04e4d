"""The activation store's writer thread: layer outputs written while the forward pass goes on.

Writing a layer's output costs little next to the forward pass only if the two overlap, and the outputs
waiting for the disk must not grow with the dataset or the number of layers: the queue is bounded in bytes.
The outputs are copied into buffers handed back once written and given out again, so the same memory
serves every batch (on VMs, first-touching memory costs far more than copying into it).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol

import torch

from faceprobe.extract.chunks import _aligned


class _Store(Protocol):
    """What the writer needs of the activation store."""

    def write_layer(self, batch: int, layer: str, values: torch.Tensor) -> None: ...

    def mark_done(self, batch: int, layers: Sequence[str]) -> None: ...


class _Writer:
    """Writes layer outputs into the store from one background thread while the forward pass goes on.

    Each output is handed over as soon as its layer has run (:meth:`put`), and a batch is marked done once
    all its layers are written (:meth:`finish`), so the outputs waiting for the writer, not whole batches,
    bound the memory: :meth:`put` waits while more than ``max_bytes`` are queued. ``written(values)`` is
    called with each output once it is on disk, to reuse its buffer. An error in the thread
    stops the writing and is raised in the caller at its next call or on exit. On exit what was handed over
    is written even when the caller raised, but only batches finished before are marked done, so an
    exception or a kill never leaves a batch marked that is not whole.
    """

    def __init__(self, store: _Store, max_bytes: int, written: Callable[[torch.Tensor], None]) -> None:
        self._store = store
        self._written = written
        self._max_bytes = max_bytes
        self._queue: queue.SimpleQueue[tuple[int, str | list[str], torch.Tensor | None] | None] = (
            queue.SimpleQueue()
        )
        self._queued = 0  # bytes handed over and not written yet
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="faceprobe-store-writer", daemon=True)

    def _run(self) -> None:
        with torch.inference_mode():  # the outputs are inference tensors
            while (item := self._queue.get()) is not None:
                batch, layers, values = item
                try:
                    if self._error is None:
                        if values is None:
                            self._store.mark_done(batch, layers)  # type: ignore[arg-type]
                        else:
                            self._store.write_layer(batch, layers, values)  # type: ignore[arg-type]
                            self._written(values)
                except BaseException as error:  # handed to the caller's thread
                    self._error = error
                finally:
                    with self._room:
                        self._queued -= 0 if values is None else _nbytes(values)
                        self._room.notify()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, batch: int, layer: str, values: torch.Tensor) -> None:
        """Queue one layer's output for ``batch``; waits while the queue is full (but never when empty)."""
        with self._room:
            self._room.wait_for(
                lambda: (
                    self._queued == 0
                    or self._queued + _nbytes(values) <= self._max_bytes
                    or self._error is not None
                )
            )
            self._queued += _nbytes(values)
        self._raise()
        self._queue.put((batch, layer, values))

    def finish(self, batch: int, layers: list[str]) -> None:
        """Mark ``batch`` of ``layers`` done once everything queued before is written."""
        self._raise()
        self._queue.put((batch, layers, None))

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise()


class _Buffers:
    """Batch buffers handed back after use and given out again: memory touched once, not once per batch.

    They start at a block boundary, so the store writes whole chunks from them with O_DIRECT.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        with self._lock:
            free = self._free.get((tuple(shape), dtype))
            if free:
                return free.pop()
        return torch.from_numpy(_aligned(math.prod(shape) * dtype.itemsize)).view(dtype).view(shape)

    def give(self, buffer: torch.Tensor) -> None:
        with self._lock:
            self._free.setdefault((tuple(buffer.shape), buffer.dtype), []).append(buffer)


def _nbytes(values: torch.Tensor) -> int:
    return values.numel() * values.element_size()
