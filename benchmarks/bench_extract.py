"""Extraction cost: every block output of ResNet-50 captured, against a bare forward pass (issue 3, issue 8).

Same images, same batches, same process, one after another: a bare ``model(x)`` under inference mode; the
in-memory extraction (hooks copy each block output into preallocated float32 arrays); and the zarr activation
store (float16 and float32 chunks with checksums). Random weights and random images: speed does not depend
on them.

    python benchmarks/bench_extract.py                  # 256 images at 112x112, batch 32
    python benchmarks/bench_extract.py --images 512 --size 224
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset
from torchvision.models import resnet50

from faceprobe.extract import extract
from faceprobe.extract.catalogue import catalogue, select_layers
from faceprobe.extract.store import ActivationStore, extract_to_store, store_key


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant; the best counts")
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

    def in_memory() -> None:
        extract(model, batches, names)

    def to_store(dtype: type) -> None:
        with tempfile.TemporaryDirectory() as root:
            key = store_key("resnet50", "random", {"size": args.size}, [str(i) for i in range(args.images)])
            store = ActivationStore.open(root, key, batch_size=args.batch)
            extract_to_store(model, TensorDataset(images), layers, store, dtype=dtype)

    variants = {
        "bare forward": bare,
        "in-memory float32": in_memory,
        "zarr store float16": lambda: to_store(np.float16),
        "zarr store float32": lambda: to_store(np.float32),
    }
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; ResNet-50 "
        f"{args.size}x{args.size}, {args.images} images, batch {args.batch}; {len(names)} block outputs, "
        f"{features:,} features per image"
    )
    base = None
    for name, run in variants.items():
        best = min(_timed(run) for _ in range(args.repeats))
        base = base or best
        print(f"{name:>20}: {best:7.2f} s  {args.images / best:7.1f} images/s  {best / base:5.2f}x bare")


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
