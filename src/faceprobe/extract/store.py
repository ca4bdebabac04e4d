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
reused buffer and the writer thread (:mod:`faceprobe.extract.writer`) writes it while the forward goes on,
a chunk is written straight from that buffer when it spans whole rows (otherwise through one reused
conversion buffer), with O_DIRECT where the filesystem allows it (:mod:`faceprobe.extract.chunks`).
Nothing is allocated per batch, which matters on VMs where first-touching memory costs far more than
copying into it.

``faceprobe.PLS`` reads a layer block by block (:meth:`LayerArray.read_rows` maps whole chunk files into
memory or reads them straight into a reused buffer), so probes fit straight from the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from zarr.codecs import BloscCodec, Crc32cCodec

from faceprobe.atomic import writing
from faceprobe.errors import FaceprobeError
from faceprobe.extract.chunks import (
    BadChunk,
    _aligned,
    _chunk_file,
    _decoding,
    _map_chunk,
    _plain,
    _read_chunk,
    _stale,
    _write_atomically,
)
from faceprobe.extract.hooks import LayerInfo, _dry_run, _first, _Forward, batch_images, copy_flat
from faceprobe.extract.writer import _Buffers, _Writer

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


#: What zarr raises for metadata (zarr.json) that is not JSON or not zarr's: the store's files were damaged.
_UNREADABLE = (ValueError, TypeError, zarr.errors.BaseZarrError)


class CorruptStoreError(FaceprobeError):
    """A chunk of the activation store fails its checksum: the file changed after it was written."""


def _checked(read: Callable) -> Callable:
    """``read`` with a bad chunk raised as :class:`CorruptStoreError`, which tells the user what to do."""

    @functools.wraps(read)
    def checked_read(self: LayerArray, *args: Any, **kwargs: Any) -> Any:
        try:
            return read(self, *args, **kwargs)
        except BadChunk as error:
            root = Path(str(self.store_path.store.root))  # type: ignore[attr-defined]
            raise CorruptStoreError(
                f"{root}: layer {self.attrs['layer']!r} has a chunk that fails its checksum; call"
                " ActivationStore.scrub() and extract again"
            ) from error

    return checked_read


class LayerArray(zarr.Array):
    """A layer's zarr array whose reads raise :class:`CorruptStoreError` on a corrupted chunk.

    Indexing, ``oindex``, ``vindex`` and ``blocks`` all read through the selection methods wrapped here.
    Open it on :func:`~faceprobe.extract.chunks._decoding`, so that zarr's reads raise ``BadChunk`` too.
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
            CorruptStoreError: a chunk fails its checksum, does not have a chunk's size, or is missing.
        """
        if not _plain(self):
            out[...] = self[rows]
            return out
        height, width = self.chunks
        dtype = np.dtype(self.dtype)
        if width == self.shape[1] and rows.start % height == 0 and rows.stop - rows.start == height:
            key = (rows.start // height, 0)
            nbytes = height * width * dtype.itemsize
            mapped = _map_chunk(_chunk_file(self, key), nbytes, key not in self._verified)
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
                path = _chunk_file(self, key)
                if not _read_chunk(path, chunk, key not in self._verified):
                    # faceprobe writes every chunk of a batch before marking it, and only marked batches
                    # are read: a missing file was deleted, and reading zarr's fill value would be wrong
                    raise BadChunk(path, "missing, though its batch is marked written")
                self._verified.add(key)
                if chunk is not target:
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
        try:
            group = zarr.open_group(path, mode="a")
            recorded = group.attrs.get("key")
        except _UNREADABLE as error:  # a damaged zarr.json: what the store holds is unknown
            raise FaceprobeError(
                f"{path}: the activation store's metadata (zarr.json) cannot be read ({error}); delete the "
                "folder to extract again"
            ) from None
        if recorded is not None:
            if recorded != json.loads(json.dumps(key)):
                raise FaceprobeError(
                    f"{path}: the activation store holds another key; delete the folder to redo it"
                )
            batch_size = int(group.attrs["batch_size"])
        else:
            with writing(path):  # zarr's writes name no file: a full disk names the store
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
        array = self._whole_layer(name)
        if array is not None:
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
        with writing(self.path):
            self._create_arrays(name, info, dtype, chunk_cols, shuffle if compress else None)

    def _whole_layer(self, name: str) -> zarr.Array | None:
        """The layer's values array when it and its batch marks exist and their metadata reads, else None.

        A kill while a layer was created or deleted (an ablated store is deleted once probed), or a damaged
        zarr.json, can leave one of the two arrays without the other; the layer is then created anew.
        """
        try:
            array = self.group[name]
            self.group[f"{name}.done"]
        except (KeyError, *_UNREADABLE):
            return None
        return array  # type: ignore[return-value]

    def _create_arrays(
        self, name: str, info: LayerInfo, dtype: np.dtype, chunk_cols: int, shuffle: str | None
    ) -> None:
        """A layer's values array (LZ4 with ``shuffle`` where given) and its per-batch done marks, replacing
        whatever a broken layer of that name left (every batch is then extracted again)."""
        for array in (name, f"{name}.done"):
            self._arrays.pop(array, None)
        self.group.create_array(
            name,
            overwrite=True,
            shape=(self.n, info.features),
            chunks=(self.batch_size, chunk_cols),
            dtype=dtype,
            compressors=[
                *([BloscCodec(cname="lz4", clevel=1, shuffle=shuffle)] if shuffle else []),
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
            f"{name}.done",
            shape=(self.n_batches,),
            chunks=(self.n_batches,),
            dtype=bool,
            fill_value=False,
            overwrite=True,
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
            with writing(self.path):
                array[rows] = flat.to("cpu", _torch_dtype(array.dtype)).numpy()

    def mark_done(self, batch: int, layers: Sequence[str]) -> None:
        """Record that ``batch`` of each of ``layers`` is written (call it only once all their chunks are)."""
        with writing(self.path):
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
            _write_atomically(_chunk_file(array, (batch, k)), chunk.reshape(-1).view(np.uint8))

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
        return self._reader(name)

    def _reader(self, name: str) -> LayerArray:
        """A new reader of the layer: it checks each chunk's checksum the first time it reads it."""
        return LayerArray(_decoding(self._array(_array_name(name))))

    def layer_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[_array_name(name)].attrs["shape"])

    def scrub(self, layers: Sequence[str] | None = None) -> dict[str, list[int]]:
        """Read every written chunk of ``layers`` (default: all) and unmark the batches that fail.

        A batch whose chunks fail their checksum, do not have a chunk's size or cannot be decoded is marked
        not done, so the next :func:`extract_to_store` recomputes it. Returns the bad batches of each layer
        that had any; an empty dict means every written chunk is intact. Reads one batch of one layer at a
        time, into one buffer, as the probes read.
        """
        if layers is None:
            layers = [a.attrs["layer"] for _, a in self.group.arrays() if "layer" in a.attrs]
        bad: dict[str, list[int]] = {}
        for layer in layers:
            reader = self._reader(layer)
            out = np.empty((self.batch_size, reader.shape[1]), np.dtype(reader.dtype))
            marks = self.done(layer)
            for batch in np.flatnonzero(marks).tolist():
                rows = self._rows(batch)
                try:
                    reader.read_rows(rows, out[: rows.stop - rows.start])
                except CorruptStoreError:
                    bad.setdefault(layer, []).append(batch)
            if layer in bad:
                marks[bad[layer]] = False
                self._array(f"{_array_name(layer)}.done")[:] = marks
        return bad


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


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
        rows = buffers.take((len(output), output[0].numel()), stored)
        writer.put(batch_index, name, copy_flat(rows, output))

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
