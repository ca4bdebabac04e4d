"""How long a command takes to say that its input is wrong, against importing torch and torchvision alone.

A study file with a wrong type, a run folder that is a file, and a folder that is no run, are refused by
reading them (or by looking at the path); the floor a command paid before it read anything, when every
package imported all of its modules, was torch and torchvision's import. Each command runs ``--repeats``
times in a fresh process; the median is printed.

    python benchmarks/bench_cli_start.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.toml"
        study.write_text('[data]\nspec = "synthetic:x"\ntrain = "many"\n[[models]]\narchitecture = "small"\n')
        valid = Path(tmp) / "valid.toml"
        valid.write_text('[data]\nspec = "synthetic:x"\n[[models]]\narchitecture = "small"\n')
        faceprobe = [sys.executable, "-m", "faceprobe.cli"]
        cases = {
            "import torch, torchvision (the old floor)": [sys.executable, "-c", "import torch, torchvision"],
            "faceprobe --help": [*faceprobe, "--help"],
            "faceprobe run STUDY (wrong type)": [*faceprobe, "run", str(study)],
            "faceprobe plan STUDY (wrong type)": [*faceprobe, "plan", str(study)],
            "faceprobe run STUDY --out FILE": [*faceprobe, "run", str(valid), "--out", str(study)],
            "faceprobe status NOT-A-RUN": [*faceprobe, "status", tmp],
            "faceprobe report NOT-A-RUN": [*faceprobe, "report", str(Path(tmp) / "nowhere")],
        }
        for label, command in cases.items():
            print(f"{label:>42}: {_seconds(command, args.repeats):5.2f} s", flush=True)


if __name__ == "__main__":
    main()
