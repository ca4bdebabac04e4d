"""End to end: `faceprobe probe` at its defaults vs the pipeline a researcher writes today, on ResNet-50.

Both sides probe the same block outputs of the same network (random weights, seeded, 112x112) on the same
draws of the same synthetic faces, each side in a fresh subprocess so its time and peak resident memory are
its own:

* faceprobe: the `faceprobe probe` command with its default settings (run in the child through the CLI's own
  entry point; only the data, model, layers, attributes, draw sizes and input size are given): its plan, its
  train pass (in RAM or through the store, as ``run.memory_gb`` decides), the evaluation pass, and every
  study it computes by default (layer, top-8 channels, top-8 neurons, single units, the VIP study, the
  Control_Random probe), which the peer does not;
* peer: the strongest simple script: every layer hooked in one forward pass over the draws' images
  (torchvision's ``create_feature_extractor`` with all the layers at once, each batch copied into one
  preallocated array per layer, all held in RAM), then per (layer, attribute) scikit-learn's
  ``PLSRegression(scale=False)`` on the train rows and ``StandardScaler`` +
  ``QuadraticDiscriminantAnalysis`` on its scores: the standardisation and ``reg_param`` of
  :class:`faceprobe.Probe`, so both sides compute the same layer probe.

faceprobe runs a network's convolutions channels-last on a CPU (:func:`faceprobe.devices.channels_last`);
``--channels-last`` also runs the peer and the bare forward so (sides ``peer-cl`` and ``bare-cl``), the
peer a researcher who knows that trick would write, and the lower floor.

Two more measurements ride along: a **bare forward** (the peer's loader and network over the same images,
no hooks, nothing kept: the floor any probe pays, for the issue's "protocol <= 2x a bare forward"), and
the **plan's estimate** (``faceprobe probe ... --plan``'s costs, computed in the faceprobe child before its
clock starts) beside the measured time, peak memory and disk of the faceprobe run.

The faces come from :func:`faceprobe.data.synth.generate` (CelebA layout, planted attributes) and the draws
from the runner's own :func:`faceprobe.run.runner.make_draws`, once, into a temporary folder both sides read.
Time is the child's work (for faceprobe the whole command, with its own imports done before the clock
starts), memory the child's peak RSS.

    python benchmarks/bench_end_to_end.py           # 22 block outputs, 8 attributes, 512 + 512 draws
    python benchmarks/bench_end_to_end.py --images 1750 --train 256 --val 256 \
        --attributes Male,Smiling,Mouth_Slightly_Open,Control_Random
    python benchmarks/bench_end_to_end.py --images 600 --train 64 --val 64 --layers "layer4.?,fc" \
        --attributes Male,Smiling --memory-gb 4,0
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ATTRIBUTES = (
    "Male",
    "Smiling",
    "Mouth_Slightly_Open",
    "Wearing_Lipstick",
    "Wearing_Earrings",
    "Arched_Eyebrows",
    "Wavy_Hair",
    "Control_Random",
)
"""Attributes whose synthetic prevalence (29-57%) gives a balanced 512 + 512 draw from a 1,800-image pool;
Control_Random is the coin flip that nothing in the image depends on."""

_COMPONENTS = 8
_REG_PARAM = 1e-3  # faceprobe.Probe's default
_IMPORTS = {
    # faceprobe's side imports its command line first, as `faceprobe probe` does (it sets the OpenMP wait
    # policy before torch loads), and so does the bare forward, the floor faceprobe is measured against;
    # the peer, a plain script, never imports it
    "faceprobe": ("faceprobe.cli.run", "faceprobe.run.runner", "torchvision.models.feature_extraction"),
    "peer": ("torchvision.models.feature_extraction", "sklearn.cross_decomposition", "faceprobe.run.work"),
    "bare": ("faceprobe.cli", "torchvision.models.feature_extraction", "faceprobe.run.work"),
}


def _model(settings: dict):
    """The seeded network; channels-last (weights and, through :func:`_layout`, inputs) on the ``-cl``
    sides, as faceprobe's forward passes run on a CPU."""
    import torch

    from faceprobe.models import load_model

    size = settings["size"]
    loaded = load_model("resnet50", "random", seed=settings["seed"], input_size=(size, size))
    if settings.get("channels_last"):
        loaded.module.to(memory_format=torch.channels_last)
    return loaded


def _layout(x, settings: dict):
    import torch

    return x.contiguous(memory_format=torch.channels_last) if settings["channels_last"] else x


def _draws(folder: Path):
    from faceprobe.run.work import Draws

    return Draws(
        pd.read_parquet(folder / "draws.parquet"),
        pd.read_parquet(folder / "labels.parquet").set_index("image_id"),
    )


def _probe_flags(folder: Path, settings: dict) -> list[str]:
    """`faceprobe probe`'s flags for this benchmark: the study, nothing about how it runs."""
    return [
        "probe",
        "--model", "resnet50",
        "--weights", "random",
        "--data", f"synthetic:{folder / 'faces'}",
        "--attributes", settings["attributes"],
        "--layers", settings["layers"],
        "--train", str(settings["train"]),
        "--val", str(settings["val"]),
        "--input-size", str(settings["size"]),
        "--seed", str(settings["seed"]),
    ]  # fmt: skip


def _run_dir(folder: Path, settings: dict) -> Path:
    return folder / f"run-{settings['memory_gb']}"


def _command(folder: Path, settings: dict) -> list[str]:
    """The whole `faceprobe probe` command line of the faceprobe side (``--memory-gb`` given only when it
    is not the default)."""
    flags = [*_probe_flags(folder, settings), "--out", str(_run_dir(folder, settings))]
    if settings["memory_gb"] is not None:
        flags += ["--memory-gb", str(settings["memory_gb"])]
    return flags


def _faceprobe(folder: Path, settings: dict) -> dict[tuple[str, str], float]:
    """`faceprobe probe` at its defaults."""
    import contextlib

    from faceprobe.cli import app

    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the child's JSON
        app(_command(folder, settings), standalone_mode=False)
    return _layer_accuracies(_run_dir(folder, settings))


def _plan(folder: Path, settings: dict) -> list:
    """The costs `faceprobe probe ... --plan` prints for the faceprobe side's study (calibration included),
    recorded from the runner's ``study_costs`` as the command calls it."""
    import contextlib

    from faceprobe.cli import app
    from faceprobe.run import runner

    recorded: list = []
    planned = runner.study_costs

    def recording(*args, **kwargs):
        recorded.extend(planned(*args, **kwargs))
        return recorded

    runner.study_costs = recording
    try:
        with contextlib.redirect_stdout(sys.stderr):
            app([*_command(folder, settings), "--plan"], standalone_mode=False)
    finally:
        runner.study_costs = planned
    return recorded


def _layer_accuracies(run_dir: Path) -> dict[tuple[str, str], float]:
    from faceprobe.run import read_table

    results = read_table(run_dir)
    layer = results[(results["representation"] == "layer") & (results["split"] == "val")]
    return {(r.layer, r.attribute): r.accuracy for r in layer.itertuples()}


class _Faces:
    """The peer's image dataset: a list of files and the model's transform."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def _loader(folder: Path, settings: dict, loaded):
    """The draws' images (all splits) through the model's preprocessing, in the benchmark's batches."""
    from torch.utils.data import DataLoader

    images = _draws(folder).images()
    paths = [folder / "faces" / "img_align_celeba" / image for image in images]
    return images, DataLoader(
        _Faces(paths, loaded.preprocessing.transform()), batch_size=settings["batch"], shuffle=False
    )


def _bare(folder: Path, settings: dict) -> dict[tuple[str, str], float]:
    """One forward pass of the network over the draws' images: no hooks, nothing kept."""
    import torch

    loaded = _model(settings)
    _, loader = _loader(folder, settings, loaded)
    with torch.inference_mode():
        for x in loader:
            loaded.module(_layout(x, settings))
    return {}


def _peer(folder: Path, settings: dict) -> dict[tuple[str, str], float]:
    """torchvision feature extraction of every layer in one forward pass, held in RAM, then scikit-learn
    PLS and QDA per (layer, attribute)."""
    import torch
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torchvision.models.feature_extraction import create_feature_extractor

    loaded = _model(settings)  # the same seeded weights and preprocessing as the faceprobe side
    draws = _draws(folder)
    images, loader = _loader(folder, settings, loaded)
    row = {image: i for i, image in enumerate(images)}
    splits = {
        (attribute, split): group["image_id"].map(row).to_numpy()
        for (attribute, split), group in draws.table.groupby(["attribute", "split"], observed=True)
    }
    labels = draws.labels.loc[images]
    names = settings["layer_names"]
    extractor = create_feature_extractor(loaded.module, {layer: layer for layer in names})
    layers: dict[str, np.ndarray] = {}  # filled in place: one copy of every layer, never two
    start = 0
    with torch.inference_mode():
        for x in loader:
            for layer, out in extractor(_layout(x, settings)).items():
                flat = out.flatten(1).numpy()
                if layer not in layers:
                    layers[layer] = np.empty((len(images), flat.shape[1]), np.float32)
                layers[layer][start : start + len(flat)] = flat
            start += len(x)
    del extractor
    accuracy = {}
    for layer, X in layers.items():
        for attribute in draws.attributes:
            train, val = splits[attribute, "train"], splits[attribute, "val"]
            y = labels[attribute].to_numpy()
            pls = PLSRegression(_COMPONENTS, scale=False).fit(X[train], y[train])
            qda = make_pipeline(StandardScaler(), QuadraticDiscriminantAnalysis(reg_param=_REG_PARAM))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # collinearity warnings, as in faceprobe.Probe
                qda.fit(pls.x_scores_, y[train])
                accuracy[layer, attribute] = qda.score(pls.transform(X[val]), y[val])
    return accuracy


def _child(side: str, folder: Path, memory_gb: float | None) -> dict:
    kind, channels_last = side.removesuffix("-cl"), side.endswith("-cl")
    for module in _IMPORTS[kind]:  # first: faceprobe's command line sets its OpenMP policy before torch loads
        importlib.import_module(module)  # before the clock starts: imports are no side's work
    import torch

    settings = json.loads((folder / "settings.json").read_text())
    settings |= {"memory_gb": memory_gb, "channels_last": channels_last}
    plan = _plan(folder, settings) if side == "faceprobe" else []
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    disk = _DiskPeak(_run_dir(folder, settings))
    start = time.perf_counter()
    with disk:
        accuracy = {"peer": _peer, "bare": _bare, "faceprobe": _faceprobe}[kind](folder, settings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "side": side,
        "seconds": seconds,
        "base_gib": base / 2**30,
        "peak_gib": peak / 2**30,
        "peak_disk_gib": disk.peak / 2**30,
        "threads": torch.get_num_threads(),
        "accuracy": [[layer, attribute, acc] for (layer, attribute), acc in accuracy.items()],
        "plan": {
            "seconds": sum(c.seconds for c in plan),
            "ram_gib": max((c.ram_bytes for c in plan), default=0) / 2**30,
            "disk_gib": sum(c.disk_bytes for c in plan) / 2**30,
            "modes": sorted({c.mode for c in plan}),
        },
    }


class _DiskPeak:
    """The largest size a folder reached while the block ran, sampled every 0.2 s in a thread."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak = folder, 0

    def _size(self, folder: str | None = None) -> int:
        """Bytes of the files under the folder, walked with ``os.scandir`` (its entries carry their stat:
        pathlib's ``rglob`` + ``stat`` kept much of a core busy on a store of thousands of chunks, a core
        the measured run needs)."""
        total = 0
        try:
            with os.scandir(folder or self.folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        total += self._size(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # not made yet, or deleted while listed
            pass
        return total

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._size())

    def __enter__(self) -> None:
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _prepare(folder: Path, args: argparse.Namespace) -> dict:
    """Synthetic faces, the runner's draws and the layer list, written once for both sides."""
    import torch

    from faceprobe.data.registry import load_dataset
    from faceprobe.data.synth import generate
    from faceprobe.extract.catalogue import catalogue, select_layers
    from faceprobe.run.config import parse_config
    from faceprobe.run.runner import make_draws

    per_identity = 20
    generate(folder / "faces", -(-args.images // per_identity), per_identity, size=112, seed=args.seed)
    spec = f"synthetic:{folder / 'faces'}"
    dataset = load_dataset(spec)
    study = {"spec": spec, "attributes": args.attributes.split(","), "train": args.train, "val": args.val}
    config = parse_config({"data": {**study, "seed": args.seed}, "models": [{"architecture": "resnet50"}]})
    draws, protocol, _ = make_draws(dataset, config)
    draws.table.to_parquet(folder / "draws.parquet")
    draws.labels.rename_axis("image_id").reset_index().to_parquet(folder / "labels.parquet")
    settings = {
        "size": args.size,
        "seed": args.seed,
        "batch": args.batch,
        "layers": args.layers,
        "attributes": args.attributes,
        "train": args.train,
        "val": args.val,
    }
    infos = select_layers(
        catalogue(_model(settings).module, torch.zeros(2, 3, args.size, args.size)), args.layers
    )
    settings["layer_names"] = [info.name for info in infos]
    (folder / "settings.json").write_text(json.dumps(settings))
    return {
        "pool": int(dataset.partitions.isin([0, 1]).sum()),
        "union": len(draws.images()),
        "train_union": len(draws.train_images()),
        "shortened": protocol.shortened,
        "layers": len(infos),
        "features": sum(info.features for info in infos),
    }


def arguments() -> argparse.ArgumentParser:
    """The command line, also parsed by benchmarks that run this probe (bench_under_load.py)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="synthetic faces generated (90%% pool)")
    parser.add_argument("--train", type=int, default=512, help="balanced train draw per attribute")
    parser.add_argument("--val", type=int, default=512, help="balanced validation draw per attribute")
    parser.add_argument("--layers", default="auto", help="layer selection (auto: every block output)")
    parser.add_argument("--attributes", default=",".join(ATTRIBUTES))
    parser.add_argument(
        "--memory-gb",
        default="default",
        help="faceprobe's --memory-gb ('default': not given, the command's default); a comma list runs "
        "faceprobe once per value, an empty one not at all",
    )
    parser.add_argument("--no-peer", action="store_true", help="run the faceprobe side(s) only")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare forward pass")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="also run the peer and the bare forward with the network and its inputs channels-last, as "
        "faceprobe runs them on a CPU (sides peer-cl and bare-cl)",
    )
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.child:
        side, folder, memory_gb = args.child
        print(json.dumps(_child(side, Path(folder), None if memory_gb == "default" else float(memory_gb))))
        return

    cases = (
        [("faceprobe", gb) for gb in args.memory_gb.split(",") if gb]
        + ([] if args.no_peer else [("peer", "0")])
        + ([] if args.no_bare else [("bare", "0")])
    )
    if args.channels_last:
        cases += [(f"{side}-cl", gb) for side, gb in cases if side in ("peer", "bare")]
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        data = _prepare(Path(tmp), args)
        print(
            f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
            f"ResNet-50 random {args.size}x{args.size}, {data['layers']} layers "
            f"({data['features']:,} features per image); "
            f"{len(args.attributes.split(','))} attributes x {args.train} train + {args.val} val from a pool "
            f"of {data['pool']} synthetic faces: {data['union']} images in the draws, {data['train_union']} "
            f"in the train draws; shortened draws: {data['shortened'] or 'none'}"
        )
        results = {}
        for side, memory_gb in cases:
            name = side if side != "faceprobe" else f"faceprobe memory_gb={memory_gb}"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", side, tmp, memory_gb], capture_output=True, text=True
            )
            if proc.returncode != 0:
                print(f"{name:>24}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            results[name] = r = json.loads(proc.stdout)
            print(
                f"{name:>24}: {r['seconds']:8.1f} s  peak {r['peak_gib']:6.2f} GiB  (after imports "
                f"{r['base_gib']:.2f} GiB)  torch threads {r['threads']}  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    bares = {side: results.pop(side) for side in ("bare", "bare-cl") if side in results}
    peers = {side: results.pop(side) for side in ("peer", "peer-cl") if side in results}
    for name, ours in results.items():
        _against_plan(name, ours)
        for side, bare in bares.items():
            times = ours["seconds"] / bare["seconds"]
            print(f"{name}: {times:.2f}x the {side} forward ({bare['seconds']:.1f} s)")
        for side, peer in peers.items():
            _compare(name, ours, side, peer)


def _against_plan(name: str, ours: dict) -> None:
    """The plan's estimate beside what the run measured (RAM: the peak above the imports)."""
    plan = ours["plan"]
    ram = ours["peak_gib"] - ours["base_gib"]
    print(
        f"{name}: plan ({', '.join(plan['modes'])}) estimated {plan['seconds']:.1f} s, "
        f"RAM {plan['ram_gib']:.2f} GiB, disk {plan['disk_gib']:.2f} GiB; measured {ours['seconds']:.1f} s "
        f"({ours['seconds'] / plan['seconds']:.2f}x), RAM above imports {ram:.2f} GiB "
        f"({ram / max(plan['ram_gib'], 1e-9):.2f}x), disk {ours['peak_disk_gib']:.2f} GiB"
    )


def _compare(name: str, ours: dict, side: str, peer: dict) -> None:
    def working(r: dict) -> float:
        return r["peak_gib"] - r["base_gib"]

    print(
        f"{name} vs {side}: {peer['seconds'] / ours['seconds']:.2f}x faster; peak memory "
        f"{ours['peak_gib'] / peer['peak_gib']:.2f} of the peer's, "
        f"{working(ours) / working(peer):.2f} above the imports (libraries: ~{ours['base_gib']:.1f} GiB)"
    )
    columns = ["layer", "attribute", "accuracy"]
    both = pd.DataFrame(ours["accuracy"], columns=columns).merge(
        pd.DataFrame(peer["accuracy"], columns=columns), on=["layer", "attribute"], suffixes=("", "_peer")
    )
    both["diff"] = 100 * (both["accuracy"] - both["accuracy_peer"]).abs()
    by_layer = both.groupby("layer", sort=False).agg(
        faceprobe=("accuracy", "mean"), peer=("accuracy_peer", "mean"), max_diff=("diff", "max")
    )
    print(f"{'layer':>10} {'faceprobe':>9} {'peer':>6} {'max |diff| pts':>14}   (mean val accuracy)")
    for layer, r in by_layer.iterrows():
        print(f"{layer:>10} {100 * r['faceprobe']:8.1f}% {100 * r['peer']:5.1f}% {r['max_diff']:14.2f}")
    worst = both.loc[both["diff"].idxmax()]
    print(
        f"accuracy: {len(both)} (layer, attribute) pairs, max |diff| {worst['diff']:.2f} points "
        f"({worst['layer']}, {worst['attribute']}), mean |diff| {both['diff'].mean():.3f} points, "
        f"{int((both['diff'] > 0.5).sum())} pairs over 0.5"
    )


if __name__ == "__main__":
    main()
