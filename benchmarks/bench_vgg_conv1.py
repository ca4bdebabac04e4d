"""The widest layer of the thesis, VGG16's first convolution at 224x224 (3,211,264 features), probed by PLS.

Issue 3 asks that this layer, over 2048 images, is probed within 24 GB of RAM. Held in memory it would be
2048 x 3.2M float32 = 26 GB (scikit-learn would first copy it to float64: 53 GB). faceprobe extracts it into
the on-disk activation store (the forward stops right after the layer) and fits PLS straight from the store,
one chunk-aligned row block at a time; the validation images are projected the same way.

Steps, each timed, in one process whose peak resident memory (ru_maxrss) is reported:
synthetic faces (planted Eyeglasses) -> extraction into the store -> PLS(8) fit -> projection of the
validation images -> QDA accuracy on them.

    python benchmarks/bench_vgg_conv1.py                       # 2048 train + 512 val images, float16 store
    python benchmarks/bench_vgg_conv1.py --train 256 --val 128 # a quick check
    python benchmarks/bench_vgg_conv1.py --dtype float32 --dir /big/disk
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceprobe import PLS, Probe
from faceprobe.data.celeba import celeba_dataset
from faceprobe.data.synth import generate
from faceprobe.extract.catalogue import catalogue, select_layers
from faceprobe.extract.store import ActivationStore, extract_to_store, store_key
from faceprobe.models import load_model

LAYER = "features.1"  # the ReLU after VGG16's first convolution: 64 x 224 x 224


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="faceprobe-vgg-", dir=args.dir))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    n = args.train + args.val
    clock = _Clock()
    per_identity = 32
    data = celeba_dataset(
        generate(work / "faces", identities=-(-n // per_identity), images_per_identity=per_identity)
    )
    clock.lap("synthetic faces")

    labels = data.attributes["Eyeglasses"].to_numpy()
    rng = np.random.default_rng(0)
    ids = np.array(data.ids)
    chosen = np.sort(rng.choice(len(ids), size=n, replace=False))
    train, val = chosen[: args.train], chosen[args.train :]
    images = [str(i) for i in ids[np.concatenate([train, val])]]
    y = labels[np.concatenate([train, val])]

    loaded = load_model("vgg16", "random", seed=0, input_size=(224, 224))
    (layer,) = select_layers(catalogue(loaded.module, torch.zeros(2, 3, 224, 224)), LAYER)
    key = store_key("vgg16", loaded.digest, loaded.preprocessing.to_dict(), images)
    store = ActivationStore.open(work / "store", key, batch_size=args.batch)
    dataset = data.torch_dataset(images, transform=loaded.preprocessing.transform())
    extract_to_store(loaded.module, dataset, [layer], store, dtype=np.dtype(args.dtype))
    X = store.layer(LAYER)
    disk = sum(f.stat().st_size for f in (work / "store").rglob("*") if f.is_file())
    clock.lap("extraction into the store")

    X_train, X_val = _Rows(X, 0, args.train), _Rows(X, args.train, n)
    pls = PLS(8).fit(X_train, y[: args.train])
    clock.lap("PLS(8) fit")
    Z_val = pls.transform(X_val)
    clock.lap("projection of the validation images")
    accuracy = Probe(None).fit(pls.x_scores_, y[: args.train]).score(Z_val, y[args.train :])
    clock.lap("QDA")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    dense = args.train * layer.features * 4
    print(
        f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; VGG16 "
        f"{LAYER} "
        f"{layer.shape} = {layer.features:,} features; {args.train} train + {args.val} val images; "
        f"{args.dtype} store, batch {args.batch}"
    )
    for name, seconds in clock.laps:
        print(f"{name:>38}: {seconds:8.1f} s")
    print(f"{'store on disk':>38}: {disk / 2**30:8.2f} GiB")
    print(f"{'train matrix as dense float32':>38}: {dense / 2**30:8.2f} GiB (what RAM would need)")
    print(f"{'peak resident memory':>38}: {peak / 2**30:8.2f} GiB")
    print(f"{'validation accuracy (Eyeglasses)':>38}: {accuracy:8.3f}")


class _Rows:
    """Rows [start, stop) of an on-disk array, read lazily: what PLS sees as X (no copy is made)."""

    def __init__(self, X: Any, start: int, stop: int) -> None:
        self.X, self.start = X, start
        self.shape = (stop - start, X.shape[1])
        self.dtype = X.dtype
        self.chunks = X.chunks

    def __getitem__(self, rows: slice) -> np.ndarray:
        begin, end, _ = rows.indices(self.shape[0])
        return self.X[self.start + begin : self.start + end]


class _Clock:
    def __init__(self) -> None:
        self.laps: list[tuple[str, float]] = []
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append((name, now - self.last))
        self.last = now


if __name__ == "__main__":
    main()
