"""Streamed PLS passes with their math on the host (NumPy) or where the rows are (torch), without a network.

A layer of ``--n`` images x ``--m`` features is streamed through
:func:`faceprobe.extract.lockstep.fit_in_lockstep` in batches made on ``--device`` (as a network's outputs
would be: the same rows every pass), and :func:`faceprobe.pls.fit_shared` fits ``--targets`` binary targets,
each on its own 40% of the rows (adjacent, as the train union orders them), with ``--components``
components. ``numpy`` copies every batch to the host and multiplies there (the CPU default); ``torch`` keeps
it on the device (the default on an accelerator); ``rows`` only makes and delivers the batches, as many
passes as a fit makes, for the share of the time that is not the fit. Prints the best of ``--repeat`` runs
per backend and the largest relative VIP difference between the two fits.

    python benchmarks/bench_pass_backend.py                                    # CPU, 2048 x 16384
    python benchmarks/bench_pass_backend.py --device cuda --n 8192 --m 2097152 --targets 40
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from faceprobe.extract.lockstep import PASS_BACKEND_ENV, fit_in_lockstep
from faceprobe.pls import fit_shared


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--m", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, (args.n, args.targets)).astype(float)
    masks = np.zeros(Y.shape, dtype=bool)
    for j in range(args.targets):
        start = j * (args.n - args.n * 2 // 5) // max(1, args.targets - 1)
        masks[start : start + args.n * 2 // 5, j] = True

    def run_pass(names, deliver):
        generator = torch.Generator(device).manual_seed(0)
        for start in range(0, args.n, args.batch):
            rows = min(args.batch, args.n - start)
            deliver(names[0], torch.randn((rows, args.m), generator=generator, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def rows_only(name, layer):
        for _ in range(args.components + 1):
            for _ in layer.stream_rows():
                pass

    def fit(name, layer):
        return fit_shared(layer, Y, masks, args.components)

    print(f"{args.n} x {args.m} float32 on {device}, {args.targets} targets, {args.components} components")
    vips = {}
    for backend in ("rows", "numpy", "torch"):
        os.environ[PASS_BACKEND_ENV] = "torch" if backend == "rows" else backend
        best = np.inf
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = fit_in_lockstep(
                run_pass, {"X": (args.n, args.m)}, rows_only if backend == "rows" else fit, device
            )
            best = min(best, time.perf_counter() - start)
        if backend != "rows":
            vips[backend] = np.stack([model.vip_ for model in out["X"]])
        print(f"{backend:6s} {best:8.3f} s", flush=True)
    gap = np.max(np.abs(vips["torch"] - vips["numpy"]) / np.abs(vips["numpy"]))
    print(f"largest relative VIP difference torch vs numpy: {gap:.2e}")


if __name__ == "__main__":
    main()
