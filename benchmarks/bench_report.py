"""Building a report: figures drawn by worker processes (the default) vs in the report's own process.

The run is the largest one the report's tests draw: four weight origins, two seeds each, every layer of a
72-layer ResNet-like catalogue, written by ``tests/conftest.py``'s ``write_hand_run`` (numbers made up, the
tables' shapes real). Or pass a run folder of your own. Both ways must write the same page. A faceprobe
without the ``workers`` option (before session 14, through ``PYTHONPATH``) is timed the one way it has.

    python benchmarks/bench_report.py                 # 2 rounds, each way once per round
    python benchmarks/bench_report.py runs/study --rounds 3
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from faceprobe.report.html import build_report
from faceprobe.report.run import load_run


def _hand_run(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import resnet_like_layers, write_hand_run

    origins = ("random", "imagenet", "checkpoint:/data/arcface-r50", "checkpoint:/data/cosface-r50")
    return write_hand_run(folder / "run", origins=origins, layers=resnet_like_layers(), seeds=(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", nargs="?", type=Path, help="a run folder (default: the hand-written one)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = load_run(args.run or _hand_run(folder))
        ways = {"in process": {"workers": 1}, "workers": {}}
        if "workers" not in inspect.signature(build_report).parameters:
            ways = {"no workers option": {}}
        pages = {}
        for i in range(args.rounds):
            for label, options in ways.items():
                start = time.perf_counter()
                index = build_report([run], folder / label, **options)
                print(f"round {i + 1}: {label:>17}: {time.perf_counter() - start:6.1f} s", flush=True)
                pages[label] = index.read_text()
        assert len(set(pages.values())) == 1, "the ways wrote different pages"


if __name__ == "__main__":
    main()
