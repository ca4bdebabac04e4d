"""Speed under load: idle, and with another process keeping one core busy, side by side in one run.

Two cases, each run in both conditions and, to show the before/after, in both ways of running a pass:

* ``pls``: ``PLS(n_components).fit`` on an n x m float32 matrix of uniform noise (one process builds X once
  and times every fit on it);
* ``e2e``: the faceprobe side of ``benchmarks/bench_end_to_end.py`` at a small size, its command line
  parsed by its own parser: its ``_prepare`` writes the faces and draws once, and its own
  ``--child faceprobe`` entry runs its whole probe in a fresh process per run (the previous run's output
  is deleted first, so nothing is resumed).

The ways of running a pass (the environment variable ``FACEPROBE_PLS_PASSES``):

* ``split`` (the default): each pass over X is split between threads of faceprobe's own, one per BLAS
  thread, each product on one thread of its kernels (BLAS and torch limited to one thread inside);
* ``blas`` (``FACEPROBE_PLS_PASSES=blas``, the behaviour before): one thread reads the blocks and each
  product is split by its kernels (torch's, and BLAS's outside them) between their own threads.

"loaded" runs while a competing process spins one core (a Python busy loop, started before the timed
run and stopped after it). Conditions and ways alternate within each repeat, so drift in the machine's
other load reaches all of them alike; the table gives the median of the repeats.

    python benchmarks/bench_under_load.py                       # both cases, 3 repeats
    python benchmarks/bench_under_load.py --cases pls --repeats 5
    python benchmarks/bench_under_load.py --cases e2e --e2e-args="--images 600 --train 64 --val 64"
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import bench_end_to_end

WAYS = ("split", "blas")
CONDITIONS = ("idle", "loaded")
_ENV = "FACEPROBE_PLS_PASSES"
# The last block of each stage: all 22 block outputs take minutes a run on a 2-core machine.
_E2E_DEFAULT = (
    "--images 300 --train 32 --val 32 --attributes Male,Smiling --layers layer1.2,layer2.3,layer3.5,layer4.2"
)


def _spin() -> None:
    parent = os.getppid()
    while os.getppid() == parent:  # ends with the benchmark, even a killed one
        for _ in range(1_000_000):
            pass


@contextmanager
def _condition(name: str) -> Iterator[None]:
    """Nothing for "idle"; for "loaded", a process spinning one core for the duration."""
    if name == "idle":
        yield
        return
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    spinner.start()
    time.sleep(0.5)  # let it reach its loop
    try:
        yield
    finally:
        spinner.terminate()
        spinner.join()


@contextmanager
def _way(name: str) -> Iterator[None]:
    old = os.environ.get(_ENV)
    os.environ[_ENV] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_ENV, None)
        else:
            os.environ[_ENV] = old


def _blas_threads() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(
        f"{lib['internal_api']} {lib['version']} {lib['num_threads']} threads"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    )


def _pls_case(args: argparse.Namespace) -> Callable[[], float]:
    from faceprobe import PLS

    X = np.random.default_rng(0).random((args.n, args.m), dtype=np.float32)
    y = (X[:, :64].sum(axis=1) > 32).astype(np.float32)
    PLS(args.components).fit(X, y)  # warm: first-touch, library loads

    def fit() -> float:
        start = time.perf_counter()
        PLS(args.components).fit(X, y)
        return time.perf_counter() - start

    return fit


def _e2e_case(args: argparse.Namespace, folder: Path) -> Callable[[], float]:
    e2e = bench_end_to_end.arguments().parse_args(shlex.split(args.e2e_args))
    data = bench_end_to_end._prepare(folder, e2e)
    print(
        f"# e2e: ResNet-50 random {e2e.size}x{e2e.size}, {data['layers']} layers "
        f"({data['features']:,} features per image), {len(e2e.attributes.split(','))} attributes x "
        f"{e2e.train} train + {e2e.val} val: {data['union']} images; memory_gb {e2e.memory_gb}",
        flush=True,
    )

    prepared = set(folder.iterdir())

    def probe() -> float:
        for path in set(folder.iterdir()) - prepared:  # the last run's folder: a run would resume it
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        command = [
            sys.executable,
            bench_end_to_end.__file__,
            "--child",
            "faceprobe",
            str(folder),
            e2e.memory_gb,
        ]
        proc = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"end-to-end child failed: {proc.stderr.strip().splitlines()[-3:]}")
        result = json.loads(proc.stdout)
        probe.torch_threads = result["threads"]  # type: ignore[attr-defined]
        return result["seconds"]

    return probe


def _measure(name: str, case: Callable[[], float], repeats: int) -> dict[tuple[str, str], list[float]]:
    """``repeats`` rounds; each times every (way, condition) once, in an order that alternates by round."""
    times: dict[tuple[str, str], list[float]] = {(w, c): [] for w in WAYS for c in CONDITIONS}
    for r in range(repeats):
        order = [(w, c) for w in WAYS for c in CONDITIONS]
        for way, condition in order if r % 2 == 0 else order[::-1]:
            with _way(way), _condition(condition):
                seconds = case()
            times[way, condition].append(seconds)
            print(
                f"  {name} round {r + 1}: {way:>5} {condition:>6} {seconds:8.2f} s  "
                f"(load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    return times


def _table(results: dict[str, dict[tuple[str, str], list[float]]]) -> None:
    print(f"\n{'case':>6} {'passes':>6} {'idle s':>8} {'loaded s':>9} {'loaded/idle':>11}   runs")
    for name, times in results.items():
        for way in WAYS:
            idle = statistics.median(times[way, "idle"])
            loaded = statistics.median(times[way, "loaded"])
            runs = len(times[way, "idle"])
            print(f"{name:>6} {way:>6} {idle:8.2f} {loaded:9.2f} {loaded / idle:10.2f}x   {runs}")
        for condition in CONDITIONS:
            before = statistics.median(times["blas", condition])
            after = statistics.median(times["split", condition])
            print(f"{name:>6} {condition}: split passes take {after / before:.2f}x the time of blas passes")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="pls,e2e", help="comma list of pls, e2e")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (case, passes, condition)")
    parser.add_argument("--n", type=int, default=2048, help="rows of X for the pls case")
    parser.add_argument("--m", type=int, default=131072, help="columns of X for the pls case")
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument(
        "--e2e-args",
        default=_E2E_DEFAULT,
        help=f"arguments of bench_end_to_end.py for the e2e case (default: {_E2E_DEFAULT!r})",
    )
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}; BLAS: {_blas_threads()}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {}
    if "pls" in cases:
        print(f"# pls: PLS({args.components}).fit on {args.n} x {args.m:,} float32", flush=True)
        results["pls"] = _measure("pls", _pls_case(args), args.repeats)
    if "e2e" in cases:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            probe = _e2e_case(args, Path(tmp))
            results["e2e"] = _measure("e2e", probe, args.repeats)
            print(f"# e2e: torch intra-op threads {getattr(probe, 'torch_threads', '?')}", flush=True)
    print(f"# BLAS outside the passes: {_blas_threads()}; load average {os.getloadavg()[0]:.1f}")
    _table(results)


if __name__ == "__main__":
    main()
