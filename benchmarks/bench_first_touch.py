"""What writing into freshly allocated memory costs on this machine: the floor under holding layers in RAM.

Holding a layer's train rows in RAM means writing every byte of a fresh array once: the kernel zeroes each
page on its first touch, and on a virtual machine that returns idle memory to its host (virtio-balloon's
free page reporting) the host must also back the page again. Each round allocates ``--gib`` GiB, fills it,
then fills it again (pages already there: the bandwidth alone), frees it and waits ``--idle`` seconds, so
the next round finds memory the guest has been able to report. The first fill of a round minus the second
is what first touches cost.

    python benchmarks/bench_first_touch.py                  # 4 GiB, 3 rounds, 75 s idle between them
    python benchmarks/bench_first_touch.py --gib 8 --idle 0
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _fill(a: np.ndarray, value: float) -> float:
    start = time.perf_counter()
    a.fill(value)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=4.0, help="size of each round's array")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=75.0, help="seconds to wait before each round")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {load:.2f}; {args.gib:g} GiB rounds")
    print(f"{'round':>5} {'idle s':>7} {'first fill s':>13} {'second fill s':>14} {'first touch s/GiB':>18}")
    for i in range(args.rounds):
        time.sleep(args.idle)
        a = np.empty(int(args.gib * 2**30) // 4, dtype=np.float32)
        first, second = _fill(a, 1.0), _fill(a, 2.0)
        del a
        per_gib = (first - second) / args.gib
        print(f"{i + 1:>5} {args.idle:>7.0f} {first:>13.2f} {second:>14.2f} {per_gib:>18.2f}")


if __name__ == "__main__":
    main()
