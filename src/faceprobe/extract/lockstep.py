"""Fit many layers from passes of the network instead of held activations: the stream mode.

A streamed layer is never held, in RAM or on disk: every pass a fit makes over it (each PLS component, the
picked units) runs the images through the network again. Each layer of a group is fitted in
a thread of its own; when every one of them waits for its next pass (or is finished), one forward pass
over the images, stopped after the deepest layer asked for, serves them all, each batch handed to the
layers' threads as it is computed. A group of layers therefore costs as many forward passes as its most
demanding fit makes passes (``n_components + 2`` for a probe), and memory holds the fits' state and a few
batches per layer, whatever the number of images.

The fits read a :class:`StreamedLayer` like any other matrix (:class:`faceprobe.pls.PLS` and the layer
probes accept it): its rows arrive once per pass, in order. Since the probes' passes cut rows into the
same blocks whatever the source, a streamed layer is fitted exactly as the same layer held in RAM.

Where the network runs on an accelerator, the rows stay there as torch tensors and the passes' products
run on it (:class:`faceprobe.pls._TorchMath`): only the fits' sums and scores reach the host. On the CPU
they become NumPy arrays, as held and stored layers are, which keeps the three fits equal to the last bit
(same blocks, same buffers, same kernels). ``FACEPROBE_PASS_BACKEND=torch`` (or ``numpy``) forces either, e.g.
to test the torch passes on a CPU.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import copy_flat

__all__ = ["PASS_BACKEND_ENV", "Deliver", "StreamedLayer", "fit_in_lockstep", "rows_device"]

T = TypeVar("T")

#: ``deliver(layer, output)``: a pass hands each batch of a layer's output (images x ..., a tensor on the
#: network's device or an array) on, from inside the forward: it is copied there.
Deliver = Callable[[str, "torch.Tensor | np.ndarray"], None]

#: Where a streamed layer's passes compute: "torch" (on the network's device, even the CPU) or "numpy"
#: (on the host, even with an accelerator); unset, torch on an accelerator and NumPy on the CPU.
PASS_BACKEND_ENV = "FACEPROBE_PASS_BACKEND"

#: Batches a layer's thread may have waiting: the forward pass runs at most this far ahead of a fit.
_QUEUED = 2
#: Seconds between checks, while a batch waits for a full queue, that its layer's thread is still alive.
_POLL = 0.1


class _Aborted(Exception):
    """The coordinator stopped: another layer's fit or the forward pass failed."""


def rows_device(device: str | torch.device) -> torch.device | None:
    """The device a streamed layer's rows stay on, as float32 tensors, for a network on ``device``; None:
    they are copied to the host as NumPy arrays (see the module docstring and :data:`PASS_BACKEND_ENV`)."""
    device = torch.device(device)
    backend = os.environ.get(PASS_BACKEND_ENV, "")
    if backend not in ("", "torch", "numpy"):
        raise FaceprobeError(f"{PASS_BACKEND_ENV}={backend!r} is not a pass backend; use torch or numpy")
    if backend == "torch" or (not backend and device.type != "cpu"):
        return device
    return None


def _copied_rows(output: torch.Tensor | np.ndarray, device: torch.device | None) -> Any:
    """A batch of a layer's output as its fits read it: float32 rows (images x features), a tensor on
    ``device`` or, without one, a NumPy array; always a copy (a hook's output may change in place later)."""
    output = torch.as_tensor(output).detach()
    rows = torch.empty((len(output), output[0].numel()), dtype=torch.float32, device=device or "cpu")
    copy_flat(rows, output)  # one copy, whatever the output's memory format
    return rows.numpy() if device is None else rows


class StreamedLayer:
    """One layer's output for the pass's images, as a matrix (images x features) that is never held.

    ``stream_rows()`` starts a pass (it waits until every layer of the group asks for one) and yields the
    rows in order, in the network's batches: float32 tensors on ``rows_device``, or NumPy arrays when it
    is None.
    """

    def __init__(
        self, coordinator: _Coordinator, name: str, shape: tuple[int, int], device: torch.device | None
    ) -> None:
        self._coordinator = coordinator
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.rows_device = device

    def stream_rows(self) -> Iterator[Any]:
        return self._coordinator.rows(self.name)


def fit_in_lockstep(
    run_pass: Callable[[Sequence[str], Deliver], None],
    shapes: Mapping[str, tuple[int, int]],
    fit: Callable[[str, StreamedLayer], T],
    device: str | torch.device = "cpu",
) -> dict[str, T]:
    """``fit(name, layer)`` of every layer in ``shapes`` (images x features), the layers streamed together.

    ``run_pass(names, deliver)`` runs the network (on ``device``) once over the images and calls
    ``deliver(name, output)`` with each batch of each layer of ``names``, in row order; it is called from
    this thread only (the device's), each time every unfinished fit waits for its next pass. The first
    error of a fit or of a pass stops every fit and is raised here.
    """
    coordinator = _Coordinator(list(shapes))
    results: dict[str, T] = {}
    kept_on = rows_device(device)

    def body(name: str) -> None:
        try:
            results[name] = fit(name, StreamedLayer(coordinator, name, shapes[name], kept_on))
        except BaseException as error:  # handed to the calling thread
            coordinator.fail(error)
        finally:
            coordinator.finish(name)

    threads = [threading.Thread(target=body, args=(name,), daemon=True) for name in shapes]
    for thread in threads:
        thread.start()
    try:
        while (asked := coordinator.next_pass()) is not None:
            run_pass(list(asked), lambda name, out: coordinator.put(asked[name], _copied_rows(out, kept_on)))
            for batches in asked.values():
                coordinator.put(batches, None)  # the pass is over
    except _Aborted:  # a fit failed while the pass fed it: its error is raised below
        pass
    except BaseException as error:
        coordinator.fail(error)
        raise
    finally:
        coordinator.stop()
        for thread in threads:
            thread.join()
    if coordinator.error is not None and not isinstance(coordinator.error, _Aborted):
        raise coordinator.error
    return results


class _Coordinator:
    """Which layers wait for a pass, their queues of batches, and the first error."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.changed = threading.Condition()
        self.waiting: dict[str, queue.Queue] = {}
        self.live = set(self.names)
        self.current: dict[str, queue.Queue] = {}  # the queues of the pass running or last run
        self.error: BaseException | None = None

    def rows(self, name: str) -> Iterator[Any]:
        """A layer's thread: ask for a pass, then receive its batches until the pass ends."""
        batches: queue.Queue = queue.Queue(_QUEUED)
        with self.changed:
            if self.error is not None:
                raise _Aborted()
            self.waiting[name] = batches
            self.changed.notify_all()
        while True:
            batch = batches.get()
            if batch is None:
                return
            if isinstance(batch, _Aborted):
                raise batch
            yield batch

    def next_pass(self) -> dict[str, queue.Queue] | None:
        """Wait until every unfinished layer asks for a pass; the layers asking, or None when all finished
        (or one failed)."""
        with self.changed:
            self.changed.wait_for(lambda: self.error is not None or self.live <= set(self.waiting))
            if self.error is not None or not self.waiting:
                return None
            asked, self.waiting = self.waiting, {}
            self.current = {name: asked[name] for name in self.names if name in asked}  # in layer order
            return self.current

    def put(self, batches: queue.Queue, item: Any) -> None:
        """Hand a batch (None: the end of the pass) to a layer's thread, waiting while its queue is full,
        unless a fit has failed."""
        while True:
            if self.error is not None:
                raise _Aborted()
            try:
                batches.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def finish(self, name: str) -> None:
        with self.changed:
            self.live.discard(name)
            self.changed.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.changed:
            if self.error is None and not isinstance(error, _Aborted):
                self.error = error
            self.changed.notify_all()

    def stop(self) -> None:
        """Wake every thread still waiting for a batch, so that it ends."""
        with self.changed:
            if self.live and self.error is None:
                self.error = _Aborted()
            queues = [*self.waiting.values(), *self.current.values()]
        for batches in queues:
            while True:  # make room: a stopped fit needs none of the batches left in its queue
                try:
                    batches.put_nowait(_Aborted())
                    break
                except queue.Full:
                    try:
                        batches.get_nowait()
                    except queue.Empty:
                        pass
