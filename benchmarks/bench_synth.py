"""Throughput of the synthetic face generator, JPEG writing included.

python benchmarks/bench_synth.py [--identities 100] [--images-per-identity 30] [--workers N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from faceprobe.data.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images-per-identity", type=int, default=30)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=None, help="default: one per available core")
    parser.add_argument(
        "--dir", default=None, help="where to write the throwaway output (default: system temp)"
    )
    args = parser.parse_args()
    images = args.identities * args.images_per_identity
    with tempfile.TemporaryDirectory(dir=args.dir) as out:
        start = time.perf_counter()
        generate(out, args.identities, args.images_per_identity, args.size, workers=args.workers)
        seconds = time.perf_counter() - start
    print(f"{images / seconds:.0f} images/s ({images} images of {args.size}x{args.size} in {seconds:.2f} s)")


if __name__ == "__main__":
    main()
