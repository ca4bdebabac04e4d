"""Fit many layers from passes of the network instead of held activations: the stream mode.

A streamed layer is never held, in RAM or on disk: every pass a fit makes over it (each PLS component, the
picked units, the readouts) runs the images through the network again. Each layer of a group is fitted in
a thread of its own; when every one of them waits for its next pass (or is finished), one forward pass
over the images, stopped after the deepest layer asked for, serves them all, each batch handed to the
layers' threads as it is computed. A group of layers therefore costs as many forward passes as its most
demanding fit makes passes (``n_components + 3`` for a probe), and memory holds the fits' state and a few
batches per layer, whatever the number of images.

The fits read a :class:`StreamedLayer` like any other matrix (:class:`faceprobe.pls.PLS` and the layer
probes accept it): its rows arrive once per pass, in order. Since the probes' passes cut rows into the
same blocks whatever the source, a streamed layer is fitted exactly as the same layer held in RAM.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["Deliver", "StreamedLayer", "fit_in_lockstep"]

T = TypeVar("T")

#: ``deliver(layer, rows)``: a pass hands each batch of a layer's rows (float32, images x features) on.
Deliver = Callable[[str, np.ndarray], None]

#: Batches a layer's thread may have waiting: the forward pass runs at most this far ahead of a fit.
_QUEUED = 2
#: Seconds between checks, while a batch waits for a full queue, that its layer's thread is still alive.
_POLL = 0.1


class _Aborted(Exception):
    """The coordinator stopped: another layer's fit or the forward pass failed."""


class StreamedLayer:
    """One layer's output for the pass's images, as a matrix (images x features) that is never held.

    ``stream_rows()`` starts a pass (it waits until every layer of the group asks for one) and yields the
    rows in order, in the network's batches.
    """

    def __init__(self, coordinator: _Coordinator, name: str, shape: tuple[int, int]) -> None:
        self._coordinator = coordinator
        self.name = name
        self.shape = shape
        self.dtype = np.dtype(np.float32)

    def stream_rows(self) -> Iterator[np.ndarray]:
        return self._coordinator.rows(self.name)


def fit_in_lockstep(
    run_pass: Callable[[Sequence[str], Deliver], None],
    shapes: Mapping[str, tuple[int, int]],
    fit: Callable[[str, StreamedLayer], T],
) -> dict[str, T]:
    """``fit(name, layer)`` of every layer in ``shapes`` (images x features), the layers streamed together.

    ``run_pass(names, deliver)`` runs the network once over the images and calls ``deliver(name, rows)``
    with each batch of each layer of ``names``, in row order; it is called from this thread only (the
    device's), each time every unfinished fit waits for its next pass. The first error of a fit or of a
    pass stops every fit and is raised here.
    """
    coordinator = _Coordinator(list(shapes))
    results: dict[str, T] = {}

    def body(name: str) -> None:
        try:
            results[name] = fit(name, StreamedLayer(coordinator, name, shapes[name]))
        except BaseException as error:  # handed to the calling thread
            coordinator.fail(error)
        finally:
            coordinator.finish(name)

    threads = [threading.Thread(target=body, args=(name,), daemon=True) for name in shapes]
    for thread in threads:
        thread.start()
    try:
        while (asked := coordinator.next_pass()) is not None:
            run_pass(list(asked), lambda name, rows: coordinator.put(asked[name], rows))
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

    def rows(self, name: str) -> Iterator[np.ndarray]:
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
