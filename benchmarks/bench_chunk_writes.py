"""Store chunk writes: O_DIRECT from an aligned buffer vs through the page cache (issue 3).

Both sides write the same chunk files the store writes (data + CRC32C, through a temporary file and a
rename, flushed to disk) with :func:`faceprobe.extract.chunks._write_atomically`; the peer is its buffered
path (page cache, fdatasync, ``posix_fadvise(DONTNEED)``), forced by refusing O_DIRECT. The sides run in
turns, ``--repeats`` rounds; the best throughput and the least CPU of each count.

    python benchmarks/bench_chunk_writes.py                 # 160 chunks of 25 MiB (4.0 GiB), best of 2
    python benchmarks/bench_chunk_writes.py --dir /scratch --chunk-mib 128 --chunks 32
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import faceprobe.extract.chunks as chunks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=160)
    parser.add_argument("--chunk-mib", type=float, default=24.5, help="24.5 MiB: a ResNet-50 layer1 batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", default=None, help="folder to write in (default: the system's temp)")
    args = parser.parse_args()

    data = chunks._aligned(int(args.chunk_mib * 2**20))
    data[:] = 7
    total = args.chunks * data.nbytes / 2**30
    direct_write = chunks._write_direct
    sides = {"O_DIRECT (faceprobe)": direct_write, "page cache (peer)": lambda *args: False}
    best: dict[str, tuple[float, float]] = {}
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores; {args.chunks} chunks of {data.nbytes:,} bytes"
        f" ({total:.2f} GiB) per side, best of {args.repeats}"
    )
    for _ in range(args.repeats):
        for side, write in sides.items():
            folder = Path(tempfile.mkdtemp(dir=args.dir))
            chunks._write_direct = write
            if side.startswith("O_DIRECT") and not write(folder / "probe", data, b"\0" * 4):
                raise SystemExit(f"{folder}: this filesystem refuses O_DIRECT; give --dir on another one")
            wall, cpu = time.perf_counter(), time.process_time()
            for k in range(args.chunks):
                chunks._write_atomically(folder / str(k), data)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            shutil.rmtree(folder)
            old = best.get(side, (0.0, float("inf")))
            best[side] = (max(old[0], total / wall), min(old[1], cpu))
    chunks._write_direct = direct_write
    peer = best["page cache (peer)"]
    for side, (rate, cpu) in best.items():
        print(f"{side:>22}: {rate:5.2f} GiB/s  CPU {cpu:5.2f} s  ({rate / peer[0]:4.2f}x the peer)")


if __name__ == "__main__":
    main()
