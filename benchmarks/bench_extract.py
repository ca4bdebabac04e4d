"""Extraction cost: every block output of ResNet-50 captured, against a bare forward pass (issue 3, issue 8).

Same images, same batches, same process: a bare ``model(x)`` under inference mode; the in-memory extraction
(hooks copy each block output into preallocated arrays); and the zarr activation store (uncompressed chunks
with CRC32C, float16 and float32, and LZ4-compressed float16 for comparison). Random weights and random
images: speed does not depend on them. After one warm-up forward the variants run in turns, ``--repeats``
rounds, and the best time of each counts, so load from other processes hits every variant alike. CPU time
(all threads of this process, user + system) is printed too: on a shared machine it tracks the work done
better than the wall clock does.

    python benchmarks/bench_extract.py                  # 256 images at 112x112, batch 32, best of 3
    python benchmarks/bench_extract.py --images 512 --size 224 --variants bare store-f16
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.models import resnet50

from faceprobe.extract import extract
from faceprobe.extract.catalogue import catalogue, select_layers
from faceprobe.extract.store import ActivationStore, extract_to_store, store_key

VARIANTS = {
    "bare": "bare forward",
    "memory-f32": "in-memory float32",
    "memory-f16": "in-memory float16",
    "store-f16": "store float16 (raw + crc32c)",
    "store-f32": "store float32 (raw + crc32c)",
    "store-f16-lz4": "store float16 (lz4 level 1 + crc32c)",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant; the best counts")
    parser.add_argument("--dir", default=None, help="folder for the stores (default: the system's temp)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    images = torch.randn(args.images, 3, args.size, args.size)
    batches = list(images.split(args.batch))
    layers = select_layers(catalogue(model, images[:2]), "auto")
    names = [layer.name for layer in layers]
    features = sum(layer.features for layer in layers)

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                model(x)

    def in_memory(dtype: type) -> None:
        extract(model, batches, names, dtype=dtype)

    disk: dict[str, int] = {}
    roots: list[tempfile.TemporaryDirectory] = []  # deleted after the timing: a store is kept, not removed

    def to_store(variant: str, dtype: type, compress: bool = False) -> None:
        roots.append(tempfile.TemporaryDirectory(dir=args.dir))
        root = roots[-1].name
        key = store_key("resnet50", "random", {"size": args.size}, [str(i) for i in range(args.images)])
        store = ActivationStore.open(root, key, batch_size=args.batch)
        for info in layers:
            store.ensure_layer(info, np.dtype(dtype), compress=compress)
        extract_to_store(model, TensorDataset(images), layers, store, dtype=dtype)
        disk[variant] = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())

    runs: dict[str, Callable[[], None]] = {
        "bare": bare,
        "memory-f32": lambda: in_memory(np.float32),
        "memory-f16": lambda: in_memory(np.float16),
        "store-f16": lambda: to_store("store-f16", np.float16),
        "store-f32": lambda: to_store("store-f32", np.float32),
        "store-f16-lz4": lambda: to_store("store-f16-lz4", np.float16, compress=True),
    }
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average"
        f" {os.getloadavg()[0]:.2f} at start; ResNet-50 {args.size}x{args.size}, {args.images} images, batch"
        f" {args.batch}; {len(names)} block outputs, {features:,} features per image; best of {args.repeats}"
    )
    bare()  # warm-up: the first forward pass of a process sets up kernels
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name in args.variants:
            times[name].append(_timed(runs[name]))
            while roots:
                roots.pop().cleanup()
    best = {name: tuple(min(column) for column in zip(*runs_, strict=True)) for name, runs_ in times.items()}
    base = best.get("bare")
    for name in args.variants:
        wall, cpu = best[name]
        ratios = f"{wall / base[0]:5.2f}x bare, CPU {cpu / base[1]:5.2f}x" if base else ""
        rate = args.images / wall
        size = f", {disk[name] / 2**20:,.0f} MiB on disk" if name in disk else ""
        print(f"{VARIANTS[name]:>36}: {wall:7.2f} s  {rate:6.1f} images/s  CPU {cpu:7.2f} s  {ratios}{size}")
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


def _timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


if __name__ == "__main__":
    main()
