"""The activation store: layer outputs on disk as chunked zarr arrays, written once, resumed, reused.

Layers of millions of features for thousands of images do not fit in memory, and recomputing them for every
attribute would multiply the forward passes. The store keeps each layer as an (images x features) zarr array
chunked by batches of images, so

* memory is bounded by the batch in the network plus the layer outputs waiting for the writer thread
  (at most 256 MiB), whatever the dataset and however many layers are extracted together;
* a crash loses at most the batch in flight: every layer records which batches it holds
  (``<layer>.done``), written only after all the batch's chunks, and extraction resumes with the missing
  batches (and deletes the chunk files a killed writer of the same machine left half-written);
* a store is found again by its key (model, weights digest, preprocessing, sample ids), so a second run with
  the same network and images reads instead of recomputing; a layer added later is extracted alone;
* every chunk carries a CRC32C checksum, so a corrupted chunk raises :class:`CorruptStoreError` instead of
  being read as numbers, and :meth:`ActivationStore.scrub` finds such chunks and marks their batches for
  recomputation;
* readers see only finished batches (:meth:`ActivationStore.layer` refuses an incomplete layer).

Writing costs little next to the forward pass: chunks are stored uncompressed by default (LZ4 saves disk
but its CPU time is taken from the network), each layer's output is copied in the store's dtype into a
reused buffer and one background thread writes it while the forward goes on, a chunk is written straight
from that buffer when it spans whole rows (otherwise through one reused conversion buffer), with O_DIRECT
where the filesystem allows it (the disk reads the buffer; nothing is copied into the page cache), else
flushed and dropped from the page cache. Nothing is allocated per batch, which matters on VMs where
first-touching memory costs far more than copying into it.

``faceprobe.PLS`` reads a layer block by block (:meth:`LayerArray.read_rows` maps whole chunk files into
memory or reads them straight into a reused buffer), so probes fit straight from the store.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import mmap
import os
import queue
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import google_crc32c
import numpy as np
import torch
import zarr
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
from zarr.storage import LocalStore

from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import LayerInfo, _dry_run, _first, _Forward, batch_images

__all__ = ["ActivationStore", "CorruptStoreError", "LayerArray", "extract_to_store", "store_key"]

_FORMAT = 1
#: Layer outputs that may wait for the store's writer thread; the forward pauses while more do.
_QUEUE_BYTES = 256 * 2**20


def store_key(
    model: str, weights_digest: str, preprocessing: dict[str, Any], sample_ids: Sequence[str]
) -> dict:
    """What makes two extractions interchangeable; its digest names the store folder."""
    samples = hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()
    return {
        "format": _FORMAT,
        "model": model,
        "weights": weights_digest,
        "preprocessing": preprocessing,
        "samples": samples,
        "n": len(sample_ids),
    }


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _array_name(layer: str) -> str:
    return layer.replace("/", "|")


#: The codecs of an uncompressed layer: raw little-endian values, then the CRC32C of those bytes.
_PLAIN_CODECS = (BytesCodec(endian="little"), Crc32cCodec())


class CorruptStoreError(FaceprobeError):
    """A chunk of the activation store fails its checksum: the file changed after it was written."""


def _checked(read: Callable) -> Callable:
    """``read`` with zarr's checksum failure raised as :class:`CorruptStoreError`."""

    @functools.wraps(read)
    def checked_read(self: LayerArray, *args: Any, **kwargs: Any) -> Any:
        try:
            return read(self, *args, **kwargs)
        except ValueError as error:
            if "checksum" not in str(error):
                raise
            root = Path(str(self.store_path.store.root))  # type: ignore[attr-defined]
            raise CorruptStoreError(
                f"{root}: layer {self.attrs['layer']!r} has a chunk that fails its checksum; call"
                " ActivationStore.scrub() and extract again"
            ) from error

    return checked_read


class LayerArray(zarr.Array):
    """A layer's zarr array whose reads raise :class:`CorruptStoreError` on a corrupted chunk.

    Indexing, ``oindex``, ``vindex`` and ``blocks`` all read through the selection methods wrapped here.
    """

    get_basic_selection = _checked(zarr.Array.get_basic_selection)
    get_orthogonal_selection = _checked(zarr.Array.get_orthogonal_selection)
    get_mask_selection = _checked(zarr.Array.get_mask_selection)
    get_coordinate_selection = _checked(zarr.Array.get_coordinate_selection)
    get_block_selection = _checked(zarr.Array.get_block_selection)

    @functools.cached_property
    def _verified(self) -> set[tuple[int, int]]:
        """The chunks whose checksum this reader has checked: the later passes of a probe skip it."""
        return set()

    @_checked
    def read_rows(self, rows: slice, out: np.ndarray) -> np.ndarray:
        """The layer's ``rows``: written into ``out`` (shaped like them, of the array's dtype) and returned,
        or, when one chunk holds exactly those rows, that chunk's file mapped into memory (copy-on-write).

        The probes' passes over a stored layer read through here. On an uncompressed layer the chunk files
        are mapped or read straight into ``out``, without zarr's per-read allocations, copies and event
        loop, which cost more than the products of a pass on wide layers; each chunk's CRC32C is checked
        the first time this array reads it. Any other layer is read through zarr.

        Raises:
            CorruptStoreError: a chunk fails its checksum or does not have a chunk's size.
        """
        if not _plain(self):
            out[...] = self[rows]
            return out
        height, width = self.chunks
        dtype = np.dtype(self.dtype)
        folder = Path(str(self.store_path.store.root)) / self.path  # type: ignore[attr-defined]

        def path(key: tuple[int, int]) -> Path:
            return folder / self.metadata.encode_chunk_key(key)

        if width == self.shape[1] and rows.start % height == 0 and rows.stop - rows.start == height:
            key = (rows.start // height, 0)
            mapped = _map_chunk(path(key), height * width * dtype.itemsize, key not in self._verified)
            self._verified.add(key)
            if mapped is not None:
                return mapped.view(dtype).reshape(height, width)
        scratch: np.ndarray | None = None
        for chunk_row in range(rows.start // height, -(-rows.stop // height)):
            first = chunk_row * height
            r0, r1 = max(rows.start, first), min(rows.stop, first + height)
            for k, c0 in enumerate(range(0, self.shape[1], width)):
                target = out[r0 - rows.start : r1 - rows.start, c0 : c0 + width]
                whole = target.shape == (height, width) and target.flags.c_contiguous
                if not whole and scratch is None:
                    scratch = np.empty((height, width), dtype)
                chunk = target if whole else scratch
                key = (chunk_row, k)
                found = _read_chunk(path(key), chunk, key not in self._verified)
                self._verified.add(key)
                if not found:
                    target[...] = self.fill_value  # never written: zarr reads its fill value
                elif chunk is not target:
                    target[...] = chunk[r0 - first : r1 - first, : target.shape[1]]
        return out


class ActivationStore:
    """One zarr group per key under ``root``; one (n x features) array per layer, chunked by batch.

    Open with :meth:`open`; the same key always maps to the same folder. ``batch_size`` is the chunk height
    and must stay the same for the life of a store (it is recorded in the key's attributes). Writing
    (:meth:`write_batch`) is for one thread at a time; any number of readers may read finished layers.
    """

    #: Largest chunk of a new layer: bounds the memory a reader needs per chunk and how much more than the
    #: asked-for columns a column selection reads.
    chunk_bytes: int = 128 * 2**20

    def __init__(self, group: zarr.Group, key: dict, batch_size: int) -> None:
        self.group = group
        self.key = key
        self.batch_size = batch_size
        self.n = int(key["n"])
        self.n_batches = -(-self.n // batch_size)
        self._arrays: dict[str, zarr.Array] = {}
        self._scratch = np.empty(0, np.uint8)

    @classmethod
    def open(cls, root: str | Path, key: dict, batch_size: int = 64) -> ActivationStore:
        path = Path(root) / _digest(key)
        group = zarr.open_group(path, mode="a")
        if "key" in group.attrs:
            if group.attrs["key"] != json.loads(json.dumps(key)):
                raise FaceprobeError(
                    f"{path}: the activation store holds another key; delete the folder to redo it"
                )
            batch_size = int(group.attrs["batch_size"])
        else:
            group.attrs.update({"key": key, "batch_size": batch_size})
        return cls(group, key, batch_size)

    @property
    def path(self) -> Path:
        return Path(str(self.group.store.root)) / self.group.path  # type: ignore[attr-defined]

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = self.group[name]  # type: ignore[assignment]
        return self._arrays[name]

    def ensure_layer(self, info: LayerInfo, dtype: np.dtype, *, compress: bool = False) -> None:
        """Create the layer's arrays unless they exist (with the same shape and dtype).

        Chunks are raw values plus a CRC32C checksum; ``compress`` adds LZ4 (level 1, shuffled), which saves
        disk on sparse layers but costs CPU while extracting (see benchmarks/bench_extract.py).
        """
        name = _array_name(info.name)
        if name in self.group:
            array = self.group[name]
            if array.shape != (self.n, info.features) or array.dtype != dtype:
                raise FaceprobeError(
                    f"{self.path}: layer {info.name!r} is stored as {array.shape} {array.dtype}, not "
                    f"{(self.n, info.features)} {dtype}; delete the store folder to redo it"
                )
            return
        widest = max(1, min(info.features, self.chunk_bytes // (dtype.itemsize * self.batch_size)))
        n_chunks = -(-info.features // widest)
        chunk_cols = -(-info.features // n_chunks)  # equal widths, since zarr stores an edge chunk whole
        shuffle = "bitshuffle" if dtype.itemsize < 4 else "shuffle"
        self.group.create_array(
            name,
            shape=(self.n, info.features),
            chunks=(self.batch_size, chunk_cols),
            dtype=dtype,
            compressors=[
                *([BloscCodec(cname="lz4", clevel=1, shuffle=shuffle)] if compress else []),
                Crc32cCodec(),
            ],
            fill_value=0,
            attributes={
                "layer": info.name,
                "shape": list(info.shape),
                "kind": info.kind,
                "depth": info.depth,
                "layout": "C,H,W" if len(info.shape) == 3 else "flat",
            },
        )
        self.group.create_array(
            f"{name}.done", shape=(self.n_batches,), chunks=(self.n_batches,), dtype=bool, fill_value=False
        )

    def done(self, layer: str) -> np.ndarray:
        """Which batches of ``layer`` are written (bool per batch)."""
        return np.asarray(self.group[f"{_array_name(layer)}.done"][:])

    def missing_batches(self, layers: Sequence[str]) -> list[int]:
        if not layers:
            return []
        missing = np.zeros(self.n_batches, dtype=bool)
        for layer in layers:
            missing |= ~self.done(layer)
        return np.flatnonzero(missing).tolist()

    def _rows(self, batch: int) -> slice:
        return slice(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n))

    def write_batch(self, batch: int, outputs: Mapping[str, np.ndarray | torch.Tensor]) -> None:
        """Write one batch of the given layers, then mark it done: a crash never half-marks a batch.

        ``outputs`` maps each layer to its (images x ...) values, an array or a tensor on any device in any
        dtype; they are flattened in C, H, W order and converted to the layer's dtype on the way.
        """
        for layer, values in outputs.items():
            self.write_layer(batch, layer, values)
        self.mark_done(batch, list(outputs))

    def write_layer(self, batch: int, layer: str, values: np.ndarray | torch.Tensor) -> None:
        """Write one layer's values for one batch, as :meth:`write_batch` does, without marking it done."""
        rows = self._rows(batch)
        array = self._array(_array_name(layer))
        flat = torch.as_tensor(values).detach().flatten(1)
        if flat.shape != (rows.stop - rows.start, array.shape[1]):
            raise FaceprobeError(
                f"{self.path}: batch {batch} of layer {layer!r} must be {rows.stop - rows.start} x"
                f" {array.shape[1]} values, not {tuple(flat.shape)}"
            )
        if _plain(array):
            self._write_chunks(array, batch, flat)
        else:
            array[rows] = flat.to("cpu", _torch_dtype(array.dtype)).numpy()

    def mark_done(self, batch: int, layers: Sequence[str]) -> None:
        """Record that ``batch`` of each of ``layers`` is written (call it only once all their chunks are)."""
        for layer in layers:
            self._array(f"{_array_name(layer)}.done")[batch] = True

    def _write_chunks(self, array: zarr.Array, batch: int, flat: torch.Tensor) -> None:
        """Encode the batch's chunks as zarr's bytes + crc32c codecs do and write them as zarr's store would.

        A chunk that is a contiguous part of ``flat`` in the array's dtype is written from the tensor's own
        memory; any other is converted into one reused buffer, zero-padded to the full chunk shape (zarr
        stores edge chunks whole).
        """
        dtype = np.dtype(array.dtype)
        height, width = array.chunks
        folder = Path(str(array.store_path.store.root)) / array.path  # type: ignore[attr-defined]
        for k, start in enumerate(range(0, flat.shape[1], width)):
            part = flat[:, start : start + width]
            if (
                part.shape == (height, width)
                and part.is_contiguous()
                and part.device.type == "cpu"
                and part.dtype == _torch_dtype(dtype)
            ):
                chunk = part.numpy()
            else:
                chunk = self._buffer((height, width), dtype)
                rows, cols = part.shape
                target = torch.from_numpy(chunk)
                target[:rows, :cols].copy_(part)
                target[rows:].zero_()
                target[:rows, cols:].zero_()
            path = folder / array.metadata.encode_chunk_key((batch, k))
            _write_atomically(path, chunk.reshape(-1).view(np.uint8))

    def _buffer(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        """The conversion buffer as a ``shape`` array, grown only when a larger chunk needs it."""
        nbytes = math.prod(shape) * dtype.itemsize
        if self._scratch.nbytes < nbytes:
            self._scratch = _aligned(nbytes)
        return self._scratch[:nbytes].view(dtype).reshape(shape)

    def layer(self, name: str) -> LayerArray:
        """The finished (n x features) array of a layer; an incomplete layer is refused, not half-read.

        Reading a chunk whose checksum fails raises :class:`CorruptStoreError`; :meth:`scrub` then finds
        every such chunk and marks its batch for recomputation by :func:`extract_to_store`.
        """
        if _array_name(name) not in self.group:
            raise FaceprobeError(f"{self.path}: no layer {name!r} in the activation store; extract it first")
        if not self.done(name).all():
            raise FaceprobeError(
                f"{self.path}: layer {name!r} is only partly extracted; run the extraction again"
            )
        return LayerArray(self._array(_array_name(name)).async_array)

    def layer_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[_array_name(name)].attrs["shape"])

    def scrub(self, layers: Sequence[str] | None = None) -> dict[str, list[int]]:
        """Read every written chunk of ``layers`` (default: all) and unmark the batches that fail.

        A batch whose chunks fail their checksum or cannot be decoded is marked not done, so the next
        :func:`extract_to_store` recomputes it. Returns the bad batches of each layer that had any; an empty
        dict means every written chunk is intact. Reads one batch of one layer at a time.
        """
        if layers is None:
            layers = [a.attrs["layer"] for _, a in self.group.arrays() if "layer" in a.attrs]
        bad: dict[str, list[int]] = {}
        for layer in layers:
            array = self._array(_array_name(layer))
            marks = self.done(layer)
            for batch in np.flatnonzero(marks).tolist():
                try:
                    array[self._rows(batch)]
                except (ValueError, RuntimeError):  # checksum mismatch, or a codec that cannot decode
                    bad.setdefault(layer, []).append(batch)
            if layer in bad:
                marks[bad[layer]] = False
                self._array(f"{_array_name(layer)}.done")[:] = marks
        return bad


def _plain(array: zarr.Array) -> bool:
    """Whether ``array`` is an uncompressed layer on the local disk, whose chunks faceprobe writes itself."""
    return (
        sys.byteorder == "little"
        and tuple(array.metadata.codecs) == _PLAIN_CODECS
        and isinstance(array.store_path.store, LocalStore)
    )


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def _read_chunk(path: Path, chunk: np.ndarray, check: bool) -> bool:
    """Read a chunk file written by :func:`_write_atomically` into ``chunk``; False if there is none.

    Raises:
        ValueError: the file does not have the chunk's size, or (with ``check``) fails its checksum;
            zarr's error for the latter.
    """
    data = chunk.reshape(-1).view(np.uint8)
    tail = bytearray(4)
    try:
        with path.open("rb", buffering=0) as file:
            complete = file.readinto(data) == data.nbytes and file.readinto(tail) == 4
            complete = complete and not file.read(1)
    except FileNotFoundError:
        return False
    if not complete:
        raise ValueError(f"{path}: not a whole chunk, so stored and computed checksum do not match")
    _check(path, data, tail, check)
    return True


def _map_chunk(path: Path, nbytes: int, check: bool) -> np.ndarray | None:
    """The ``nbytes`` of a chunk file mapped into memory (no copy), or None if there is none.

    The mapping is copy-on-write: a write to the array never reaches the file, and the array is writable,
    so torch can wrap it without a warning.

    Raises:
        ValueError: as :func:`_read_chunk`.
    """
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size != nbytes + 4:
                raise ValueError(f"{path}: not a whole chunk, so stored and computed checksum do not match")
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)  # writes stay private
    except FileNotFoundError:
        return None
    data = np.frombuffer(mapped, np.uint8, count=nbytes)
    _check(path, data, mapped[nbytes:], check)
    return data


def _check(path: Path, data: np.ndarray, tail: bytes | bytearray, check: bool) -> None:
    if check and google_crc32c.value(data) != int.from_bytes(tail, "little"):
        raise ValueError(f"{path}: stored and computed checksum do not match")


def _write_atomically(path: Path, data: np.ndarray) -> None:
    """Write ``data`` and its CRC32C (little-endian) to ``path`` through a temporary file, as zarr does.

    The chunk is on disk before the rename, so a power cut never leaves a chunk named but empty. It goes
    straight from ``data`` to the disk (:func:`_write_direct`) where the filesystem allows it; otherwise it is
    written through the page cache, flushed and dropped from it, so the kernel reuses those pages for the
    next chunk instead of taking fresh ones (on VMs that back guest memory lazily that costs more than the
    write itself). Readers fetch the chunk from disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{_HOST}.{os.getpid()}.{uuid.uuid4().hex}.partial")  # see _stale
    checksum = google_crc32c.value(data).to_bytes(4, "little")
    try:
        if not _write_direct(partial, data, checksum):
            with partial.open("wb") as file:
                file.write(data)
                file.write(checksum)
                file.flush()
                getattr(os, "fdatasync", os.fsync)(file.fileno())  # macOS has no fdatasync
                if hasattr(os, "posix_fadvise"):  # nor posix_fadvise
                    os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


#: This machine in the names of chunks being written (dots would split the name): see :func:`_stale`.
_HOST = socket.gethostname().replace(".", "_")


def _stale(partial: Path) -> bool:
    """Whether a chunk file being written (``CHUNK.HOST.PID.UUID.partial``) was left by a dead local process.

    A kill during a write leaves that file behind; the batch is not marked done and is written again under
    a new name. Only a writer of the same host can tell that the PID is gone (another machine's, or a live
    process's, may still be writing), so anything else is kept.
    """
    fields = partial.name.split(".")
    if os.name != "posix" or len(fields) < 5 or fields[-4] != _HOST or not fields[-3].isdigit():
        return False
    try:
        os.kill(int(fields[-3]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


#: O_DIRECT's alignment of buffer addresses, file offsets and lengths: the largest logical block in use.
_ALIGN = 4096
#: Devices (``st_dev``) whose filesystem refused O_DIRECT (tmpfs, for one): not asked again.
_NO_DIRECT: set[int] = set()


def _aligned(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialised memory starting at a multiple of ``_ALIGN``, as O_DIRECT needs."""
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes]


def _write_direct(path: Path, data: np.ndarray, checksum: bytes) -> bool:
    """Write ``data`` + ``checksum`` to a new file with O_DIRECT; False, with nothing written, where it can't.

    The disk reads the chunk from ``data`` itself: no copy into the page cache, a third of the CPU time of a
    buffered write and twice its throughput on the benchmark machine (docs/benchmarks.md). The whole blocks
    come straight from ``data`` (which must start at a multiple of ``_ALIGN``); its last partial block and
    the checksum go through one zero-padded block, and the file is then cut to its true length.
    """
    flag = getattr(os, "O_DIRECT", 0)  # Linux and FreeBSD
    device = path.parent.stat().st_dev
    if not flag or data.ctypes.data % _ALIGN or device in _NO_DIRECT:
        return False
    whole = data.nbytes - data.nbytes % _ALIGN
    last = _aligned(-(-(data.nbytes - whole + len(checksum)) // _ALIGN) * _ALIGN)
    last[: data.nbytes - whole] = data[whole:]
    last[data.nbytes - whole : data.nbytes - whole + len(checksum)] = np.frombuffer(checksum, np.uint8)
    last[data.nbytes - whole + len(checksum) :] = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o666)
        try:
            done = 0
            while done < whole:  # a single write may stop short (Linux: at 2 GiB)
                done += os.pwrite(fd, data[done:whole], done)
            os.pwrite(fd, last, whole)
            os.ftruncate(fd, data.nbytes + len(checksum))
            os.fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:  # refused at open, or blocks larger than _ALIGN at write
            raise
        _NO_DIRECT.add(device)
        return False
    return True


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

    def __init__(
        self, store: ActivationStore, max_bytes: int, written: Callable[[torch.Tensor], None]
    ) -> None:
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
    """Batch buffers handed back after use and given out again: memory touched once, not once per batch."""

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


def extract_to_store(
    model: nn.Module,
    dataset: Dataset,
    layers: Sequence[LayerInfo],
    store: ActivationStore,
    dtype: Any = np.float32,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
    *,
    precision: str = "float32",
    stop: bool = True,
) -> ActivationStore:
    """Run the batches the store lacks through ``model`` and write every layer's output into the store.

    One forward pass per batch serves all layers (under ``precision``, see
    :func:`faceprobe.devices.autocast`), and with ``stop`` it ends right after the last of them. A
    background thread writes each layer's output while the forward goes on (at most ``_QUEUE_BYTES`` of
    outputs wait for it, whatever the batch and the layers). Each hook copies its output, converted to the
    store's dtype and moved to the CPU, into a buffer that the writer hands back once the output is written
    (so a later in-place operation, such as torchvision Bottleneck's ``out += identity`` on ``bn3``, cannot
    change it, and the same memory serves every batch). ``progress(k)`` is called after each batch's
    forward pass. Chunk files that a killed writer of this machine left half-written in these layers are
    deleted first.
    """
    dtype = np.dtype(dtype)
    if len(dataset) != store.n:  # type: ignore[arg-type]
        raise FaceprobeError(f"the dataset has {len(dataset)} images but the store key says {store.n}")  # type: ignore[arg-type]
    for info in layers:
        store.ensure_layer(info, dtype)
    names = [info.name for info in layers]
    for name in names:
        for partial in (store.path / _array_name(name)).rglob("*.partial"):
            if _stale(partial):
                partial.unlink(missing_ok=True)
    todo = store.missing_batches(names)
    if not todo:
        return store
    bs = store.batch_size
    indices = [i for b in todo for i in range(b * bs, min((b + 1) * bs, store.n))]
    loader = DataLoader(Subset(dataset, indices), batch_size=bs, shuffle=False, num_workers=workers)
    first, batches = _first(loader)
    device = torch.device(device)
    model.to(device)
    features = _dry_run(model, batch_images(first)[:1].to(device), names, precision)
    for info in layers:
        if features[info.name] != info.features:
            raise FaceprobeError(
                f"layer {info.name!r} gives {features[info.name]} features per image but the store"
                f" expects {info.features}; give images of the size the layers were described at"
            )
    stored = _torch_dtype(dtype)
    batch_index = -1
    buffers = _Buffers()

    def keep(name: str, output: torch.Tensor) -> None:
        flat = output.flatten(1)
        writer.put(batch_index, name, buffers.take(flat.shape, stored).copy_(flat))

    with (
        _Writer(store, _QUEUE_BYTES, buffers.give) as writer,
        _Forward(model, names, keep, device, precision, stop) as forward,
    ):
        for batch_index, batch in zip(todo, batches, strict=True):
            x = batch_images(batch)
            forward(x)
            writer.finish(batch_index, names)
            if progress is not None:
                progress(len(x))
    return store
