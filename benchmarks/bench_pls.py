"""PLS fit, 8 components, float32 X (n x m): faceprobe.PLS vs scikit-learn vs ikpls, and the memory floor.

Each (method, width) runs in a fresh subprocess so its peak memory is its own: the child builds X, records
its resident memory, fits, and reports the time and its peak resident memory (ru_maxrss). "floor" is one
pass X'y (the memory-bandwidth bound of any algorithm that reads X); NIPALS needs 16 such products for 8
components (faceprobe fuses them into 9 passes).

    python benchmarks/bench_pls.py                      # widths 16384, 131072, 802816
    python benchmarks/bench_pls.py --widths 131072 --methods faceprobe,sklearn
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np

METHODS = ("floor", "faceprobe", "sklearn", "ikpls")


def _fitter(method: str, components: int, X: np.ndarray, y: np.ndarray):
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


def _child(method: str, n: int, m: int, components: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    X = rng.random((n, m), dtype=np.float32)
    y = (X[:, :64].sum(axis=1) > 32).astype(np.float32)
    x_bytes = X.nbytes
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fit = _fitter(method, components, X, y)  # imports happen here, outside the timing
    times = []
    for _ in range(repeats):  # best of a few: this machine's timings are noisy
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
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
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, m, a, r = args.child
        print(json.dumps(_child(method, int(n), int(m), int(a), int(r))))
        return

    print(
        f"# {platform.processor() or platform.machine()}, {platform.python_version()}, n={args.n}, "
        f"{args.components} components, float32"
    )
    print(
        f"{'m':>8} {'method':>10} {'seconds':>8} {'X GiB':>6} {'peak GiB':>8} {'peak/X':>6} "
        f"{'vs faceprobe':>12}"
    )
    for m in (int(w) for w in args.widths.split(",")):
        rows = {}
        for method in args.methods.split(","):
            if method in ("sklearn", "ikpls") and m > args.skip_peers_above:
                continue
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    method,
                    str(args.n),
                    str(m),
                    str(args.components),
                    str(args.repeats),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(f"{m:>8} {method:>10} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            rows[method] = r = json.loads(proc.stdout)
            ratio = r["seconds"] / rows["faceprobe"]["seconds"] if "faceprobe" in rows else float("nan")
            print(
                f"{m:>8} {method:>10} {r['seconds']:8.2f} {r['x_gib']:6.2f} {r['peak_gib']:8.2f} "
                f"{r['peak_gib'] / r['x_gib']:6.2f} {ratio:11.1f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
