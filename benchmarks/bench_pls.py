"""PLS fit, 8 components, float32 X (n x m): faceprobe.PLS vs scikit-learn vs ikpls, and the memory floor.

Each (method, width) runs in a fresh subprocess so its peak memory is its own: the child builds X, records
its resident memory, fits, and reports the time and its peak resident memory (ru_maxrss). "floor" is one
pass X'y (the memory-bandwidth bound of any algorithm that reads X); NIPALS needs 16 such products for 8
components (faceprobe fuses them into 9 passes).

The second table fits many binary targets on one X, each on its own random subset of the rows (50-90%), as
the layerwise study does for its attributes: "shared" is one ``fit_shared`` call (every pass over X serves all
targets), "separate" one ``PLS.fit(X[rows], y[rows])`` per target (a row copy of X and 9 passes each).
With ``--draw D`` each target's rows are instead a random train draw of D of ``--n`` images, X holds the
images in at least one, ordered by the draws they are in, as the probes order the union of their
attributes' train draws, and each target also scores the images of its validation draw (``--val``, by
default 3 D others) that are rows of X, as the probes do (the thesis: 40 draws of 2048 + 6144 from
CelebA's ~180,000 images): "shared" is one ``fit_transform_shared`` call, "separate" a fit and a
transform per target.

    python benchmarks/bench_pls.py                      # widths 16384, 131072, 802816
    python benchmarks/bench_pls.py --widths 131072 --methods faceprobe,sklearn
    python benchmarks/bench_pls.py --widths 0 --shared-widths 131072 --targets 40
    python benchmarks/bench_pls.py --widths 0 --shared-widths 131072 --targets 40 --n 8192 --draw 96
    python benchmarks/bench_pls.py --widths 0 --shared-widths 200704 --targets 8 --n 1800 --draw 512 --val 512
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

import numpy as np

METHODS = ("floor", "faceprobe", "sklearn", "ikpls")
SHARED_METHODS = ("shared", "separate")


def _draws(n: int, draw: int, val: int, targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each target's random train draw of ``draw`` of ``n`` images, and its validation draw of ``val``
    others: the rows of the images in at least one train draw, ordered by the train draws they are in
    (then by image), one column per target, for both."""
    rng = np.random.default_rng(2)
    drawn = np.zeros((n, targets), dtype=bool)
    validation = np.zeros_like(drawn)
    for a in range(targets):
        order = rng.permutation(n)
        drawn[order[:draw], a] = True
        validation[order[draw : draw + val], a] = True
    rows = drawn.any(axis=1)
    drawn, validation = drawn[rows], validation[rows]
    order = sorted(range(len(drawn)), key=lambda i: (tuple(np.flatnonzero(drawn[i])), i))
    return drawn[order], validation[order]


def _fitter(method: str, components: int, X: np.ndarray, y: np.ndarray, targets: int, draws=None):
    if method in SHARED_METHODS:
        from faceprobe.pls import PLS, fit_shared, fit_transform_shared

        rng = np.random.default_rng(1)
        # Target a: is the sum of its own 64 random features above the median? Fitted on 50-90% of the rows.
        sums = X[:, rng.choice(X.shape[1], size=(targets, 64))].sum(axis=2)
        Y = (sums > np.median(sums, axis=0)).astype(np.float64)
        if draws is not None:
            masks, scored = draws
            if method == "shared":
                return lambda: fit_transform_shared(X, Y, masks, components, scored=scored)
            return lambda: [
                PLS(components).fit(X[masks[:, a]], Y[masks[:, a], a]).transform(X[scored[:, a]])
                for a in range(targets)
            ]
        masks = rng.random(Y.shape) < rng.uniform(0.5, 0.9, targets)
        if method == "shared":
            return lambda: fit_shared(X, Y, masks, components)
        return lambda: [PLS(components).fit(X[masks[:, a]], Y[masks[:, a], a]) for a in range(targets)]
    if method == "floor":
        return lambda: X.T @ y
    if method == "faceprobe":
        from faceprobe import PLS

        return lambda: PLS(components).fit(X, y)
    if method == "sklearn":
        from sklearn.cross_decomposition import PLSRegression

        return lambda: PLSRegression(components, scale=False).fit(X, y)
    if method == "ikpls":
        from ikpls.numpy import PLS as IKPLS

        model = IKPLS(algorithm=1, scale_X=False, scale_Y=False, copy=False, dtype=np.float32)
        return lambda: model.fit(X, y[:, None], components)
    raise ValueError(f"unknown method {method}")


def _child(method: str, n: int, m: int, components: int, repeats: int, targets: int, draws: str) -> dict:
    rng = np.random.default_rng(0)
    draw, val = (int(size) for size in draws.split(","))
    drawn = _draws(n, draw, val, targets) if draw and method in SHARED_METHODS else None
    n = n if drawn is None else len(drawn[0])
    X = rng.random((n, m), dtype=np.float32)
    y = (X[:, :64].sum(axis=1) > 32).astype(np.float32)
    x_bytes = X.nbytes
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fit = _fitter(method, components, X, y, targets, drawn)  # imports happen here, outside the timing
    times = []
    for _ in range(repeats):  # best of a few: this machine's timings are noisy
        start = time.perf_counter()
        fitted = fit()
        times.append(time.perf_counter() - start)
        del fitted  # before the next repeat, so the peak holds one set of models, as a caller's would
    seconds = min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "method": method,
        "n": n,
        "m": m,
        "seconds": seconds,
        "x_gib": x_bytes / 2**30,
        "peak_gib": peak / 2**30,
        "extra_gib": max(0, peak - base) / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--widths", default="16384,131072,802816")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument(
        "--skip-peers-above",
        type=int,
        default=131072,
        help="widths above this run faceprobe and the floor only (peers need > 24 GB there)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="fits per method and width; the best counts")
    parser.add_argument(
        "--shared-widths",
        default="16384,131072",
        help="widths of the many-targets table (802816 needs ~14 GB free; 0 skips the table)",
    )
    parser.add_argument("--targets", type=int, default=40, help="targets sharing one X in that table")
    parser.add_argument(
        "--draw",
        type=int,
        default=0,
        help="in that table, fit each target on a random draw of this many of the n images, X holding the "
        "images drawn at least once, and score its validation draw's images among them (0: each fitted on "
        "50-90%% of all rows)",
    )
    parser.add_argument("--val", type=int, help="validation draw per target with --draw (default 3 draws)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, m, a, r, t, d = args.child
        print(json.dumps(_child(method, int(n), int(m), int(a), int(r), int(t), d)))
        return
    args.val = 3 * args.draw if args.val is None else args.val

    print(
        f"# {platform.processor() or platform.machine()}, {platform.python_version()}, n={args.n}, "
        f"{args.components} components, float32, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    if _widths(args.widths):
        _table(args, _widths(args.widths), args.methods.split(","), "faceprobe", "vs faceprobe")
    if _widths(args.shared_widths):
        rows = f"a draw of {args.draw} of {args.n} images" if args.draw else "50-90% of its rows"
        rows += f", scoring its validation draw of {args.val} among them" if args.draw else ""
        print(f"\n# {args.targets} targets on one X, each on {rows}")
        _table(args, _widths(args.shared_widths), list(SHARED_METHODS), "shared", "vs shared")


def _widths(text: str) -> list[int]:
    return [w for w in (int(x) for x in text.split(",")) if w > 0]


def _table(args: argparse.Namespace, widths: list[int], methods: list[str], reference: str, vs: str) -> None:
    """One child per (width, method); the last column is each time over the reference method's."""
    print(f"{'m':>8} {'method':>10} {'seconds':>8} {'X GiB':>6} {'peak GiB':>8} {'peak/X':>6} {vs:>12}")
    for m in widths:
        rows = {}
        for method in methods:
            if method in ("sklearn", "ikpls") and m > args.skip_peers_above:
                continue
            draws = f"{args.draw},{args.val}"
            child = [method, args.n, m, args.components, args.repeats, args.targets, draws]
            proc = subprocess.run(
                [sys.executable, __file__, "--child", *map(str, child)], capture_output=True, text=True
            )
            if proc.returncode != 0:
                print(f"{m:>8} {method:>10} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            rows[method] = r = json.loads(proc.stdout)
            ratio = f"{r['seconds'] / rows[reference]['seconds']:11.1f}x" if reference in rows else ""
            print(
                f"{m:>8} {method:>10} {r['seconds']:8.2f} {r['x_gib']:6.2f} {r['peak_gib']:8.2f} "
                f"{r['peak_gib'] / r['x_gib']:6.2f} {ratio}",
                flush=True,
            )


if __name__ == "__main__":
    main()
