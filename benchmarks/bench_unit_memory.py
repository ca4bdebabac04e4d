"""One wide stored layer's unit probes: the memory they hold above the layer PLS, and their time.

A layer as wide as VGG16's first convolution at 224 x 224 (64 channels of 224 x 224, 3,211,264 features) is
written to a file in float16 rows and read back as the activation store's layers are (``read_rows`` into
the reader's own buffer, no memory map). Each of ``--attributes`` attributes draws ``--train`` and
``--val`` of ``--images`` images at random and has a signal planted in a channel of its own; the layer's
rows are the union of the train draws, in the runner's order, and each attribute's validation images
inside it are its evaluation rows there (the others would come from the evaluation pass). ``fit_layer`` runs
with the fits' budget ``--budget-gib``: first the layer PLS of every attribute, then the unit probes (each
attribute's top-8 channels, 401,408 columns; its top-8 neurons; each channel alone; the VIP study's 50
neurons), whose anonymous resident memory (``RssAnon``: what the process allocated, not the file's pages)
is sampled every 20 ms and reported as its peak above its level when the unit probes started.

    python benchmarks/bench_unit_memory.py                  # 1024 images, 4 attributes x 384 + 384, 2 GiB
    python benchmarks/bench_unit_memory.py --images 512 --train 192 --val 192

Run it on another commit with ``PYTHONPATH=/path/to/its/src`` to compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np

from faceprobe.studies import layerwise
from faceprobe.studies.layerwise import AttributeRows, fit_layer

SHAPE = (64, 224, 224)


def _anonymous_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no RssAnon in /proc/self/status: this benchmark needs Linux")


class _FileLayer:
    """Rows of float16 in a file, read like a stored layer of the activation store."""

    def __init__(self, path: Path, n: int, m: int) -> None:
        self.path, self.shape, self.dtype = path, (n, m), np.dtype(np.float16)

    def read_rows(self, rows: slice, out: np.ndarray) -> np.ndarray:
        with open(self.path, "rb") as handle:
            handle.seek(rows.start * self.shape[1] * 2)
            handle.readinto(memoryview(out).cast("B"))
        return out


def _write_layer(path: Path, n: int, labels: np.ndarray, rng: np.random.Generator) -> None:
    """ReLU noise, with attribute ``a``'s positives lifted in channel ``5 a + 3``."""
    m = int(np.prod(SHAPE))
    with open(path, "wb") as handle:
        for start in range(0, n, 16):
            rows = np.maximum(rng.standard_normal((min(16, n - start), *SHAPE), dtype=np.float32), 0)
            for a in range(labels.shape[1]):
                rows[:, 5 * a + 3] += 0.5 * labels[start : start + len(rows), a, None, None]
            handle.write(rows.reshape(len(rows), m).astype(np.float16).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--attributes", type=int, default=4)
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--val", type=int, default=384)
    parser.add_argument(
        "--budget-gib", type=float, default=2.0, help="the fits' budget (fit_layer's max_bytes)"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the layer's file goes (default: a temp dir)"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    m = int(np.prod(SHAPE))
    draws = [rng.permutation(args.images)[: args.train + args.val] for _ in range(args.attributes)]
    # the stored layer holds the train union, ordered as the runner orders it: by the train draws each
    # image is in (images of the same draws adjacent)
    member = {}
    for a, drawn in enumerate(draws):
        for image in drawn[: args.train]:
            member.setdefault(int(image), []).append(a)
    union = sorted(member, key=lambda image: (tuple(member[image]), image))
    position = {image: row for row, image in enumerate(union)}
    n = len(union)
    labels = rng.integers(0, 2, (n, args.attributes))
    rows = {}
    for a, drawn in enumerate(draws):
        train = np.sort([position[int(i)] for i in drawn[: args.train]])
        val = np.sort([position[int(i)] for i in drawn[args.train :] if int(i) in position])  # inside X
        rows[f"A{a}"] = AttributeRows(train, val, labels[train, a], labels[val, a])

    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        path = Path(folder) / "layer.f16"
        start = time.perf_counter()
        _write_layer(path, n, labels, rng)
        written = time.perf_counter() - start
        layer = _FileLayer(path, n, m)

        marks: dict[str, float] = {}
        peak = {"units": 0}
        original = layerwise._layer_pls

        def timed_pls(*a, **k):  # type: ignore[no-untyped-def]
            fits = original(*a, **k)
            marks["pls"], marks["rss"] = time.perf_counter(), _anonymous_rss()
            return fits

        def sample() -> None:
            while "done" not in marks:
                if "rss" in marks:
                    peak["units"] = max(peak["units"], _anonymous_rss() - int(marks["rss"]))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with mock.patch.object(layerwise, "_layer_pls", timed_pls):
            start = time.perf_counter()
            fit = fit_layer(
                layer, SHAPE, rows, single_units=True, vip_study=50, max_bytes=int(args.budget_gib * 2**30)
            )
            marks["done"] = time.perf_counter()
        sampler.join()
        scored = fit.score().rows

    channels = [r["accuracy"] for r in scored if r["representation"] == "channels" and r["split"] == "val"]
    matrix = args.train * (8 * 224 * 224 + 8 + 50) * 4
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs; layer {SHAPE} float16 from a file "
        f"({n} rows, {n * m * 2 / 2**30:.1f} GiB, written in {written:.0f} s); {args.attributes} "
        f"attributes x {args.train} train + {args.val} val of {args.images} images; fits' budget "
        f"{args.budget_gib} GiB; "
        f"one attribute's train unit matrix {matrix / 2**30:.2f} GiB"
    )
    print(f"{'layer PLS s':>12} {'units s':>8} {'units peak GiB':>15} {'channels val acc':>17}")
    print(
        f"{marks['pls'] - start:12.1f} {marks['done'] - marks['pls']:8.1f} {peak['units'] / 2**30:15.2f} "
        f"{np.mean(channels):17.3f}"
    )


if __name__ == "__main__":
    main()
