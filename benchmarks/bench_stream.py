"""Thesis draw sizes on one machine: the plan streams what the disk cannot hold, vs the same study stored.

A pool of synthetic faces (CelebA layout, planted attributes), ResNet-18 with random weights at 112x112, all
block outputs, 8 attributes (Control_Random included) with the thesis's balanced draws of 2048 train and
6144 validation images each. The same study runs twice through `faceprobe run`, each in a fresh process:

* ``stream``: ``run.mode = "auto"`` with ``run.disk_gb`` a tenth of what storing the train layers needs
  (and ``memory_gb = 0``, so nothing is held in RAM): the plan streams the widest layers;
* ``store``: ``run.mode = "store"`` with the disk it needs: one train pass, every layer read from disk.

For each: wall time, peak resident memory of the process, peak size of the run folder (sampled every 0.2 s
during the run), and the forward passes over the train images (images the network ran on, from the run's
progress lines, less the evaluation images, over the train images). The two runs' result tables must be
equal value for value. Then the cost of the full thesis study (ResNet-50 at 224x224, 40 attributes + the
control, 2048 + 6144, all 16 block outputs) on this machine, extrapolated from rates measured here: the
ResNet-50 forward at 224 and a streamed PLS pass over grouped train draws.

    python benchmarks/bench_stream.py                        # 20,000 faces, 8 x (2048 + 6144)
    python benchmarks/bench_stream.py --pool 3000 --train 256 --val 512   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ATTRIBUTES = (
    "Male",
    "Smiling",
    "Mouth_Slightly_Open",
    "Wearing_Lipstick",
    "Wearing_Earrings",
    "Arched_Eyebrows",
    "Wavy_Hair",
)
"""Attributes whose synthetic prevalence (29-57%) allows balanced draws of 2048 + 6144 from 20,000 faces; the
run adds Control_Random, the eighth."""

STUDY = """
[data]
spec = "synthetic:{faces}"
attributes = {attributes}
train = {train}
val = {val}
test = 0

[[models]]
architecture = "resnet18"
weights = ["random"]
layers = "auto"
input_size = {size}

[run]
device = "cpu"
memory_gb = 0
{{placement}}
"""

#: The thesis study's train and evaluation images per model (`faceprobe plan` on the thesis preset over a
#: CelebA-sized label set; docs/benchmarks.md, issue 17).
THESIS_TRAIN, THESIS_EVALUATION = 66_414, 106_252


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _run(study: Path, run_dir: Path) -> dict:
    """`faceprobe run` in a fresh process, sampled for its RSS and the run folder's size."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "faceprobe.cli", "run", str(study), "--out", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peaks = {"rss": 0, "disk": 0}

    def sample() -> None:
        handle = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peaks["rss"] = max(peaks["rss"], handle.memory_info().rss)
            except psutil.Error:
                pass
            peaks["disk"] = max(peaks["disk"], _folder_bytes(run_dir))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"faceprobe run failed:\n{err[-3000:]}")
    images = [int(n.replace(",", "")) for n in re.findall(r": images: done, ([\d,]+)/", err)]
    return {"seconds": seconds, "peak_rss": peaks["rss"], "peak_disk": peaks["disk"], "images": sum(images)}


def _thesis_rates(size: int = 224) -> dict:
    """Measured here: ResNet-50's forward at ``size`` (images/s, to its last block) and its block outputs'
    width; a streamed PLS pass (bytes/s) over 41 targets whose train draws are grouped rows."""
    import torch

    from faceprobe.extract import catalogue, extract
    from faceprobe.extract.catalogue import select_layers
    from faceprobe.models import load_model
    from faceprobe.pls import fit_shared

    loaded = load_model("resnet50", "random", input_size=(size, size))
    layers = select_layers(catalogue(loaded.module, torch.rand(2, 3, size, size)), "auto")
    features = sum(info.features for info in layers)
    images = torch.rand(16, 3, size, size)
    extract(loaded.module, images[:2], [layers[-1].name])
    start = time.perf_counter()
    extract(loaded.module, images, [layers[-1].name])
    forward = len(images) / (time.perf_counter() - start)

    class Streamed:  # rows arrive in batches of 64, as a network's do
        def __init__(self, X):
            self.X, self.shape, self.dtype = X, X.shape, np.dtype(np.float32)

        def stream_rows(self):
            for s in range(0, len(self.X), 64):
                yield self.X[s : s + 64]

    rng = np.random.default_rng(0)
    n, m, targets = 4100, 65536, 41
    X = rng.standard_normal((n, m), dtype=np.float32)
    masks = np.zeros((n, targets), dtype=bool)
    per = n // targets
    for a in range(targets):  # grouped draws: each its own rows, a few shared with the next
        masks[a * per : (a + 1) * per + per // 4, a] = True
    Y = rng.integers(0, 2, masks.shape).astype(float)
    start = time.perf_counter()
    fit_shared(Streamed(X), Y, masks, 8)
    pass_bytes = X.nbytes * 9 / (time.perf_counter() - start)
    return {"features": features, "layers": len(layers), "forward": forward, "pass_bytes": pass_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=20_000, help="synthetic faces in the pool")
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--val", type=int, default=6144)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    from faceprobe.data.synth import generate
    from faceprobe.run import load_config, read_table
    from faceprobe.run.runner import study_costs

    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    faces = folder / "faces"
    if not (faces / "list_attr_celeba.txt").exists():
        start = time.perf_counter()
        generate(faces, identities=args.pool // 40, images_per_identity=40, size=args.size, workers=2)
        print(f"{args.pool} faces generated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    base = STUDY.format(
        faces=faces, attributes=json.dumps(list(ATTRIBUTES)), train=args.train, val=args.val, size=args.size
    )
    whole = folder / "store.toml"
    whole.write_text(base.replace("{placement}", 'mode = "store"'))
    costs = study_costs(load_config(whole))
    needed = sum(c.disk_bytes for c in costs)
    train, evaluation = costs[0].train_images, costs[0].evaluation_images
    budget_gb = needed / 10 / 2**30
    stream = folder / "stream.toml"
    stream.write_text(base.replace("{placement}", f"disk_gb = {budget_gb!r}"))
    whole.write_text(base.replace("{placement}", f'mode = "store"\ndisk_gb = {2 * needed / 2**30!r}'))

    figures = {}
    for name, study in (("stream", stream), ("store", whole)):
        run_dir = folder / f"run-{name}"
        figures[name] = _run(study, run_dir)
        figures[name]["forwards"] = (figures[name]["images"] - evaluation) / train
        plan = json.loads((run_dir / "units" / "plan.json").read_text())
        figures[name]["streamed"] = sum(len(u["streamed"]) for u in plan)
        figures[name]["layers"] = sum(len(u["layers"]) for u in plan)
    tables = [read_table(folder / f"run-{name}").sort_values(["layer", "attribute", "representation", "unit"])
              for name in figures]  # fmt: skip
    same = np.array_equal(tables[0]["accuracy"].to_numpy(), tables[1]["accuracy"].to_numpy(), equal_nan=True)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {__import__('torch').get_num_threads()}")  # fmt: skip
    print(f"study: resnet18 random {args.size}x{args.size}, block outputs, 8 attributes x "
          f"({args.train} + {args.val}); {train:,} train and {evaluation:,} evaluation images; "
          f"storing the train layers needs {needed / 2**30:.1f} GiB, the stream run's budget "
          f"{budget_gb:.2f} GiB")  # fmt: skip
    for name, f in figures.items():
        print(
            f"{name:7s} {f['seconds'] / 60:6.1f} min  peak RSS {f['peak_rss'] / 2**30:5.2f} GiB  peak run "
            f"folder {f['peak_disk'] / 2**30:6.2f} GiB  forward passes over the train images "
            f"{f['forwards']:.1f}  streamed layers {f['streamed']}/{f['layers']}"
        )
    print(f"results equal value for value: {same}")

    rates = _thesis_rates()
    n_forward = THESIS_TRAIN * 11 + THESIS_EVALUATION  # streamed: components + 3 train passes, then eval
    forward_s = n_forward / rates["forward"]
    pls_s = THESIS_TRAIN * rates["features"] * 4 * 11 / rates["pass_bytes"]
    print(
        f"thesis study (ResNet-50 224x224, {rates['layers']} block outputs, {rates['features']:,} features "
        f"per image, 41 targets, {THESIS_TRAIN:,} train + {THESIS_EVALUATION:,} evaluation images), all "
        f"streamed, on this machine: forward {rates['forward']:.1f} images/s -> {forward_s / 3600:.1f} h; "
        f"PLS passes {rates['pass_bytes'] / 2**30:.2f} GiB/s -> {pls_s / 3600:.1f} h; "
        f"total ~{(forward_s + pls_s) / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()
