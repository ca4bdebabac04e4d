"""One layer's probes at the end-to-end benchmark's proportions: the layer PLS, then the unit probes.

``fit_layer`` on a random float32 X held in RAM (images x C*H*W, a planted signal per attribute), each
attribute a balanced-size random train draw and a validation draw among X's rows, as the runner orders
them: the time of the layer PLS of every attribute (shared passes) and, apart, of everything after it (the
units each attribute's VIP picks: top-8 channels, top-8 neurons, each channel alone, the VIP study's
neurons; their gathers, PLS and QDA fits, readouts), then of scoring. The unit probes are many small
fits on threads, so the repeats' median is reported beside the best.

    python benchmarks/bench_layer_probes.py                          # ResNet-50 at 112: conv1, layer1, layer3
    python benchmarks/bench_layer_probes.py --shapes 64,56,56 --attributes 40 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from unittest import mock

import numpy as np


def _rows(n: int, attributes: int, train: int, val: int, rng: np.random.Generator) -> dict:
    from faceprobe.studies.layerwise import AttributeRows

    rows = {}
    for a in range(attributes):
        y = rng.integers(0, 2, n)
        drawn = rng.permutation(n)
        tr, va = np.sort(drawn[:train]), np.sort(drawn[train : train + val])
        rows[f"A{a}"] = AttributeRows(tr, va, y[tr], y[va])
    return rows


def _plant(X: np.ndarray, rows: dict) -> None:
    """Each attribute shifts a few hundred neurons of its positive images, so its VIP picks real units."""
    for a, sel in enumerate(rows.values()):
        every = np.concatenate([sel.train, sel.val])
        labels = np.concatenate([sel.y_train, sel.y_val])
        X[every[labels == 1], a * 7 : a * 7 + 300] += 0.3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", default="64,56,56;256,28,28;1024,7,7", help="C,H,W per layer, ';'-separated"
    )
    parser.add_argument("--images", type=int, default=1800, help="rows of X")
    parser.add_argument("--attributes", type=int, default=8)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from faceprobe.studies import layerwise

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.images} "
        f"images, {args.attributes} attributes x {args.train} train + {args.val} val; top-8, single units, "
        "VIP study 50"
    )
    columns = ("layer shape", "layer PLS s", "units best s", "units median s", "score s")
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, (14, 12, 13, 15, 8), strict=True)))
    for text in args.shapes.split(";"):
        shape = tuple(int(s) for s in text.split(","))
        rng = np.random.default_rng(0)
        X = rng.standard_normal((args.images, int(np.prod(shape))), dtype=np.float32)
        rows = _rows(args.images, args.attributes, args.train, args.val, rng)
        _plant(X, rows)
        start = time.perf_counter()
        shared = layerwise._layer_pls(X, rows, 8)
        pls_seconds = time.perf_counter() - start
        units, scoring = [], []
        # the units alone, on the same layer PLS
        with mock.patch.object(layerwise, "_layer_pls", return_value=shared):
            for _ in range(args.repeats):
                start = time.perf_counter()
                fit = layerwise.fit_layer(X, shape, rows, single_units=True, vip_study=50)
                units.append(time.perf_counter() - start)
                start = time.perf_counter()
                fit.score()
                scoring.append(time.perf_counter() - start)
        print(
            f"{text:>14} {pls_seconds:12.2f} {min(units):13.2f} {statistics.median(units):15.2f} "
            f"{statistics.median(scoring):8.2f}"
        )


if __name__ == "__main__":
    main()
