"""The activation store: layer outputs on disk as chunked zarr arrays, written once, resumed, reused.

Layers of millions of features for thousands of images do not fit in memory, and recomputing them for every
attribute would multiply the forward passes. The store keeps each layer as an (images x features) zarr array
chunked by batches of images, so

* memory is bounded by one batch, whatever the dataset (hooks copy into reused per-batch buffers);
* a crash loses at most the batch in flight: every layer records which batches it holds (``<layer>.done``),
  written only after the batch's chunk, and extraction resumes at the first missing batch;
* a store is found again by its key (model, weights digest, preprocessing, sample ids), so a second run with
  the same network and images reads instead of recomputing; a layer added later is extracted alone;
* every chunk carries a CRC32C checksum, so a corrupted chunk raises instead of being read as numbers;
* readers see only finished batches (:meth:`ActivationStore.layer` refuses an incomplete layer).

``faceprobe.PLS`` reads a zarr array block by block, so probes fit straight from the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from zarr.codecs import BloscCodec, Crc32cCodec

from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import LayerInfo, batch_images, capture, evaluating

__all__ = ["ActivationStore", "extract_to_store", "store_key"]

_FORMAT = 1


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


class ActivationStore:
    """One zarr group per key under ``root``; one (n x features) array per layer, chunked by batch.

    Open with :meth:`open`; the same key always maps to the same folder. ``batch_size`` is the chunk height
    and must stay the same for the life of a store (it is recorded in the key's attributes).
    """

    def __init__(self, group: zarr.Group, key: dict, batch_size: int) -> None:
        self.group = group
        self.key = key
        self.batch_size = batch_size
        self.n = int(key["n"])
        self.n_batches = -(-self.n // batch_size)

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

    def ensure_layer(self, info: LayerInfo, dtype: np.dtype) -> None:
        """Create the layer's arrays unless they exist (with the same shape and dtype)."""
        name = _array_name(info.name)
        if name in self.group:
            array = self.group[name]
            if array.shape != (self.n, info.features) or array.dtype != dtype:
                raise FaceprobeError(
                    f"{self.path}: layer {info.name!r} is stored as {array.shape} {array.dtype}, not "
                    f"{(self.n, info.features)} {dtype}; delete the store folder to redo it"
                )
            return
        chunk_cols = max(1, min(info.features, (32 * 2**20) // (dtype.itemsize * self.batch_size)))
        self.group.create_array(
            name,
            shape=(self.n, info.features),
            chunks=(self.batch_size, chunk_cols),
            dtype=dtype,
            compressors=[
                BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle" if dtype.itemsize < 4 else "shuffle"),
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

    def write_batch(self, batch: int, outputs: dict[str, np.ndarray]) -> None:
        """Write one batch of the given layers, then mark it done: a crash never half-marks a batch."""
        rows = slice(batch * self.batch_size, min((batch + 1) * self.batch_size, self.n))
        for layer, values in outputs.items():
            self.group[_array_name(layer)][rows] = values
        for layer in outputs:
            done = self.group[f"{_array_name(layer)}.done"]
            marks = np.asarray(done[:])
            marks[batch] = True
            done[:] = marks

    def layer(self, name: str) -> zarr.Array:
        """The finished (n x features) array of a layer; an incomplete layer is refused, not half-read."""
        if _array_name(name) not in self.group:
            raise FaceprobeError(f"{self.path}: no layer {name!r} in the activation store; extract it first")
        if not self.done(name).all():
            raise FaceprobeError(
                f"{self.path}: layer {name!r} is only partly extracted; run the extraction again"
            )
        return self.group[_array_name(name)]

    def layer_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.group[_array_name(name)].attrs["shape"])


def extract_to_store(
    model: nn.Module,
    dataset: Dataset,
    layers: Sequence[LayerInfo],
    store: ActivationStore,
    dtype: Any = np.float32,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ActivationStore:
    """Run the batches the store lacks through ``model`` and write every layer's output into the store.

    One forward pass per batch serves all layers; each hook copies its output into a reused buffer of the
    store's dtype, and the batch is written and marked done before the next one starts.
    """
    dtype = np.dtype(dtype)
    if len(dataset) != store.n:  # type: ignore[arg-type]
        raise FaceprobeError(f"the dataset has {len(dataset)} images but the store key says {store.n}")  # type: ignore[arg-type]
    for info in layers:
        store.ensure_layer(info, dtype)
    names = [info.name for info in layers]
    todo = store.missing_batches(names)
    if not todo:
        return store
    bs = store.batch_size
    indices = [i for b in todo for i in range(b * bs, min((b + 1) * bs, store.n))]
    loader = DataLoader(Subset(dataset, indices), batch_size=bs, shuffle=False, num_workers=workers)
    buffers = {info.name: np.empty((bs, info.features), dtype=dtype) for info in layers}
    filled: dict[str, int] = {}

    def keep(name: str, output: Any) -> None:
        flat = output.detach().flatten(1)
        if flat.shape[1] != buffers[name].shape[1]:
            raise FaceprobeError(
                f"layer {name!r} gives {flat.shape[1]} features per image but the store expects"
                f" {buffers[name].shape[1]}; give images of the size the layers were described at"
            )
        torch.from_numpy(buffers[name][: len(flat)]).copy_(flat)
        filled[name] = len(flat)

    model.to(device)
    with evaluating(model), torch.inference_mode(), capture(model, names, keep):
        for batch_index, batch in zip(todo, loader, strict=True):
            x = batch_images(batch)
            filled.clear()
            model(x.to(device))
            if missing := [n for n in names if n not in filled]:
                raise FaceprobeError(f"layer(s) {missing} did not run in the forward pass")
            store.write_batch(batch_index, {n: buffers[n][: len(x)] for n in names})
            if progress is not None:
                progress(len(x))
    return store
