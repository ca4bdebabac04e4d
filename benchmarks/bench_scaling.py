"""How the probe's time and memory grow with layer width, number of images and of attributes (issue 8).

Each sweep varies one of n (images, the rows of the union matrix X), m (features of the layer) and A
(attributes) around a ResNet-50-at-112-px layer (n = 1024, m = 100,352: layer2's width). Every attribute is
fitted on its own random half of the rows (its train draw), 8 components, float32 X of uniform noise with a
planted signal per attribute. Methods, each in a fresh subprocess per case (time: best of ``--repeats``;
memory: peak RSS above the process's RSS once X is built):

* ``floor``: one pass ``X'y`` over all n rows, the memory-bandwidth bound of anything that reads X;
* ``pls``: one ``faceprobe.PLS(8).fit`` per attribute on its rows (copied out of X, as a caller of PLS does);
* ``probe``: one ``faceprobe.Probe(8).fit`` per attribute (PLS, then standardised QDA on the scores);
* ``shared``: ``faceprobe.pls.fit_shared`` (every attribute in lockstep, each pass over X shared, rows as
  masks), what ``probe_layer`` uses.

``pls`` reads half of X 9 times per attribute, ``shared`` all of X 9 times for every attribute together; the
table gives both in floor passes, and the share of ``probe`` spent outside PLS.

    python benchmarks/bench_scaling.py                          # three sweeps and docs/img/bench_scaling.png
    python benchmarks/bench_scaling.py --sweeps width --widths 2048,32768 --plot ""
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("floor", "pls", "probe", "shared")
_BASE = {"n": 1024, "m": 100_352, "a": 1}
_SWEEPS = {"width": "m", "images": "n", "attributes": "a"}
_LABELS = {"m": "layer width m (features)", "n": "images n", "a": "attributes A"}


def _problem(n: int, m: int, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X (n x m float32), labels (n x a, 0/1) planted in 16 features each, train masks (half the rows)."""
    rng = np.random.default_rng(0)
    X = rng.random((n, m), dtype=np.float32)
    Y = np.empty((n, a))
    for j in range(a):
        signal = X[:, (16 * j + np.arange(16)) % m].sum(axis=1) + rng.normal(0, 1, n)
        Y[:, j] = signal > np.median(signal)
    masks = np.zeros((n, a), dtype=bool)
    for j in range(a):
        masks[rng.permutation(n)[: n // 2], j] = True
    return X, Y, masks


def _fitter(method: str, X: np.ndarray, Y: np.ndarray, masks: np.ndarray):
    from faceprobe import PLS, Probe
    from faceprobe.pls import fit_shared

    columns = range(Y.shape[1])
    if method == "floor":
        y = Y[:, 0].astype(np.float32)
        return lambda: X.T @ y
    if method == "pls":
        return lambda: [PLS(8).fit(X[masks[:, j]], Y[masks[:, j], j]) for j in columns]
    if method == "probe":
        return lambda: [Probe(8).fit(X[masks[:, j]], Y[masks[:, j], j]) for j in columns]
    if method == "shared":
        return lambda: fit_shared(X, Y, masks, 8)
    raise ValueError(f"unknown method {method}")


def _child(method: str, n: int, m: int, a: int, repeats: int) -> dict:
    X, Y, masks = _problem(n, m, a)
    fit = _fitter(method, X, Y, masks)  # imports happen here, outside the timing
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": min(times), "x_gib": X.nbytes / 2**30, "extra_gib": max(0, peak - base) / 2**30}


def _run(method: str, case: dict, repeats: int) -> dict | None:
    argv = [method, case["n"], case["m"], case["a"], repeats]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, argv)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"  {method} {case} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout)


def _print_row(key: str, row: dict) -> None:
    r = row["methods"]
    cells = " ".join(
        f"{r[m]['seconds']:8.3f} {r[m]['extra_gib']:6.2f}" if m in r else f"{'-':>8} {'-':>6}"
        for m in METHODS
    )
    nan = float("nan")
    floor = r["floor"]["seconds"] if "floor" in r else nan
    passes = [r[m]["seconds"] / floor if m in r else nan for m in ("pls", "shared")]
    outside = 1 - r["pls"]["seconds"] / r["probe"]["seconds"] if {"pls", "probe"} <= r.keys() else nan
    print(
        f"{row[key]:>8} {row['x_gib']:6.2f} {cells} {passes[0]:8.1f} {passes[1]:8.1f} {outside:8.0%}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweeps", default="width,images,attributes")
    parser.add_argument("--widths", default="2048,32768,100352,200704,802816")
    parser.add_argument("--images", default="256,512,1024,2048,4096,8192")
    parser.add_argument("--attributes", default="1,2,4,8,16,40")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=2, help="fits per case; the best counts")
    parser.add_argument(
        "--plot", default=str(Path(__file__).parents[1] / "docs" / "img" / "bench_scaling.png")
    )
    parser.add_argument("--out", default="", help="also write the measurements to this JSON file")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, m, a, repeats = args.child
        print(json.dumps(_child(method, int(n), int(m), int(a), int(repeats))))
        return

    values = {"m": args.widths, "n": args.images, "a": args.attributes}
    methods = args.methods.split(",")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, Python "
        f"{platform.python_version()}, numpy {np.__version__}; 8 components, float32, each attribute on half "
        f"the rows; base n={_BASE['n']} m={_BASE['m']} A={_BASE['a']}"
    )
    results: dict[str, list] = {}
    for sweep in args.sweeps.split(","):
        key = _SWEEPS[sweep]
        head = " ".join(f"{m + ' s':>8} {'+GiB':>6}" for m in METHODS)
        print(f"\n## {sweep} ({_LABELS[key]}), load {os.getloadavg()[0]:.2f}")
        print(f"{key:>8} {'X GiB':>6} {head} {'pls/flr':>8} {'shr/flr':>8} {'non-PLS':>8}")
        results[sweep] = []
        for value in (int(v) for v in values[key].split(",")):
            case = {**_BASE, key: value}
            r = {m: out for m in methods if (out := _run(m, case, args.repeats)) is not None}
            x_gib = case["n"] * case["m"] * 4 / 2**30
            results[sweep].append({**case, "x_gib": x_gib, "methods": r})
            _print_row(key, results[sweep][-1])
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    if args.plot:
        _plot(results, methods, Path(args.plot))
        print(f"\nplot: {args.plot}")


def _plot(results: dict[str, list], methods: list[str], path: Path) -> None:
    """Time (top) and peak memory above X (bottom) per sweep, log-log, with X's own size for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 7), squeeze=False)
    for col, (sweep, rows) in enumerate(results.items()):
        key = _SWEEPS[sweep]
        time_ax, memory_ax = axes[0, col], axes[1, col]
        ticks = [row[key] for row in rows]
        for method in methods:
            kept = [(row[key], row["methods"][method]) for row in rows if method in row["methods"]]
            if kept:
                xs, outs = zip(*kept, strict=True)
                time_ax.plot(xs, [o["seconds"] for o in outs], "o-", label=method)
                # ru_maxrss moves in pages: a method that allocates nothing shows 0, drawn at 1 MiB
                memory_ax.plot(xs, [max(o["extra_gib"], 2**-10) for o in outs], "o-", label=method)
        memory_ax.plot(ticks, [row["x_gib"] for row in rows], "k--", label="X itself")
        for ax, ylabel in ((time_ax, "seconds"), (memory_ax, "peak RSS above X, GiB (floor 1 MiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, [_short(v) for v in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(_LABELS[key])
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        time_ax.set_title(f"{sweep} (others at n={_BASE['n']}, m={_BASE['m']:,}, A={_BASE['a']})", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _short(value: int) -> str:
    return f"{value / 1000:.0f}k" if value >= 10_000 else str(value)


if __name__ == "__main__":
    main()
