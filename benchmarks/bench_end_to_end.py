"""End to end: probe every block output of ResNet-50 with faceprobe vs the pipeline a researcher writes today.

Both sides probe the same layers of the same network (random weights, seeded, 112x112) on the same draws of
the same synthetic faces, each side in a fresh subprocess so its time and peak resident memory are its own:

* faceprobe: the runner's own path, ``faceprobe.run.work.probe_rows`` over groups of ``--layers-per-unit``
  layers (one truncated forward per group feeds all its layers and attributes). It also fits the top-8
  channel and top-8 neuron probes of every (layer, attribute), which the peer does not. As in the runner, a
  group whose activations outgrow ``--memory-gb`` streams through the activation store instead of RAM, and
  also extracts the later streamed groups' layers, so they cost no forward pass;
* peer: per layer, torchvision's ``create_feature_extractor`` over the draws' images (one truncated forward
  per layer, ``torch.cat`` of the batches), then per attribute scikit-learn's ``PLSRegression(scale=False)``
  on the train rows and ``StandardScaler`` + ``QuadraticDiscriminantAnalysis`` on its scores: the
  standardisation and ``reg_param`` of :class:`faceprobe.Probe`, so both sides compute the same probe.

The faces come from :func:`faceprobe.data.synth.generate` (CelebA layout, planted attributes) and the draws
from :func:`faceprobe.data.sampling.sample_protocol`, once, into a temporary folder both sides read. Time is
the child's work (model build, extraction, probes), imports excluded; memory is the child's peak RSS.

    python benchmarks/bench_end_to_end.py           # 22 block outputs, 8 attributes, 512 + 512 draws
    python benchmarks/bench_end_to_end.py --images 1000 --train 256 --val 256 --memory-gb 4,0
    python benchmarks/bench_end_to_end.py --images 600 --train 64 --val 64 --layers "layer4.?,fc" \
        --attributes Male,Smiling
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
_IMPORTS = ("torchvision.models.feature_extraction", "sklearn.cross_decomposition", "faceprobe.run.work")


def _model(settings: dict):
    from faceprobe.models import load_model

    size = settings["size"]
    return load_model("resnet50", "random", seed=settings["seed"], input_size=(size, size))


def _draws(folder: Path):
    from faceprobe.run.work import Draws

    return Draws(
        pd.read_parquet(folder / "draws.parquet"),
        pd.read_parquet(folder / "labels.parquet").set_index("image_id"),
    )


def _faceprobe(folder: Path, settings: dict) -> dict[tuple[str, str], float]:
    """The runner's work units, one after another: layer groups through ``probe_rows``.

    As the runner decides, a group whose activations outgrow ``memory_gb`` streams through the activation
    store (in the temporary folder) instead of being held in memory, and, as its local executor does, also
    extracts the later store-bound groups' layers in its forward pass.
    """
    import torch

    from faceprobe.data.registry import load_dataset
    from faceprobe.extract.catalogue import catalogue, select_layers
    from faceprobe.extract.store import ActivationStore, store_key
    from faceprobe.run.config import ProbeConfig
    from faceprobe.run.work import Forward, Storage, probe_rows

    loaded = _model(settings)
    size = settings["size"]
    infos = select_layers(catalogue(loaded.module, torch.zeros(2, 3, size, size)), settings["layers"])
    dataset = load_dataset(f"synthetic:{folder / 'faces'}")
    draws, transform, group = _draws(folder), loaded.preprocessing.transform(), settings["layers_per_unit"]
    images = draws.images()
    key = store_key(loaded.architecture, loaded.digest, loaded.preprocessing.to_dict(), images)
    accuracy = {}
    groups = [infos[start : start + group] for start in range(0, len(infos), group)]
    stored = [
        len(images) * sum(info.features for info in layers) * 4 > settings["memory_gb"] * 2**30
        for layers in groups
    ]
    for k, layers in enumerate(groups):
        storage = (
            Storage(ActivationStore.open(folder / "store", key, batch_size=settings["batch"]))
            if stored[k]
            else None
        )
        if storage is not None:  # as the local executor: also the later store-bound groups' layers
            ahead = [
                info for later, s in zip(groups[k + 1 :], stored[k + 1 :], strict=True) if s for info in later
            ]
            storage = Storage(storage.store, extract_also=tuple(ahead))
        forward = Forward(loaded.module, transform, dataset, tuple(images), settings["batch"])
        probe = ProbeConfig(components=_COMPONENTS, top_k=8, single_units=False, vip_study=0)
        rows, _ = probe_rows(forward, draws, layers, probe, 0, storage)
        accuracy |= {
            (r["layer"], r["attribute"]): r["accuracy"]
            for r in rows
            if r["representation"] == "layer" and r["split"] == "val"
        }
    return accuracy


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


def _peer(folder: Path, settings: dict) -> dict[tuple[str, str], float]:
    """torchvision feature extraction + scikit-learn PLS and QDA, layer by layer."""
    import torch
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from torch.utils.data import DataLoader
    from torchvision.models.feature_extraction import create_feature_extractor

    loaded = _model(settings)  # the same seeded weights and preprocessing as the faceprobe side
    draws = _draws(folder)
    images = draws.images()
    row = {image: i for i, image in enumerate(images)}
    paths = [folder / "faces" / "img_align_celeba" / image for image in images]
    loader = DataLoader(
        _Faces(paths, loaded.preprocessing.transform()), batch_size=settings["batch"], shuffle=False
    )
    splits = {
        (attribute, split): group["image_id"].map(row).to_numpy()
        for (attribute, split), group in draws.table.groupby(["attribute", "split"], observed=True)
    }
    labels = draws.labels.loc[images]
    accuracy = {}
    for layer in settings["layer_names"]:
        extractor = create_feature_extractor(loaded.module, {layer: "x"})
        with torch.inference_mode():
            X = torch.cat([extractor(x)["x"].flatten(1) for x in loader]).numpy()
        for attribute in draws.attributes:
            train, val = splits[attribute, "train"], splits[attribute, "val"]
            y = labels[attribute].to_numpy()
            pls = PLSRegression(_COMPONENTS, scale=False).fit(X[train], y[train])
            qda = make_pipeline(StandardScaler(), QuadraticDiscriminantAnalysis(reg_param=_REG_PARAM))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # collinearity warnings, as in faceprobe.Probe
                qda.fit(pls.x_scores_, y[train])
                accuracy[layer, attribute] = qda.score(pls.transform(X[val]), y[val])
        del X, extractor
    return accuracy


def _child(side: str, folder: Path, memory_gb: float) -> dict:
    import torch

    for module in _IMPORTS:
        importlib.import_module(module)  # before the clock starts: imports are no side's work

    settings = json.loads((folder / "settings.json").read_text()) | {"memory_gb": memory_gb}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    accuracy = (_peer if side == "peer" else _faceprobe)(folder, settings)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "side": side,
        "seconds": seconds,
        "base_gib": base / 2**30,
        "peak_gib": peak / 2**30,
        "threads": torch.get_num_threads(),
        "accuracy": [[layer, attribute, acc] for (layer, attribute), acc in accuracy.items()],
    }


def _prepare(folder: Path, args: argparse.Namespace) -> dict:
    """Synthetic faces, the protocol's draws and the layer list, written once for both sides."""
    import torch

    from faceprobe.data.registry import load_dataset
    from faceprobe.data.sampling import sample_protocol
    from faceprobe.data.synth import generate
    from faceprobe.extract.catalogue import catalogue, select_layers

    per_identity = 20
    generate(folder / "faces", -(-args.images // per_identity), per_identity, size=112, seed=args.seed)
    dataset = load_dataset(f"synthetic:{folder / 'faces'}")
    protocol = sample_protocol(
        dataset, args.attributes.split(","), n_train=args.train, n_val=args.val, n_test=0, seed=args.seed
    )
    table = protocol.to_frame().astype({"attribute": "string"})
    table.to_parquet(folder / "draws.parquet")
    union = sorted(set(table["image_id"]))
    labels = dataset.attributes.loc[union, list(protocol.attributes)]
    labels.rename_axis("image_id").reset_index().to_parquet(folder / "labels.parquet")
    settings = {
        "size": args.size,
        "seed": args.seed,
        "batch": args.batch,
        "layers": args.layers,
        "layers_per_unit": args.layers_per_unit,
        "store_dtype": args.store_dtype,
    }
    infos = select_layers(
        catalogue(_model(settings).module, torch.zeros(2, 3, args.size, args.size)), args.layers
    )
    settings["layer_names"] = [info.name for info in infos]
    (folder / "settings.json").write_text(json.dumps(settings))
    return {
        "pool": int(dataset.partitions.isin([0, 1]).sum()),
        "union": len(union),
        "shortened": protocol.shortened,
        "layers": len(infos),
        "features": sum(info.features for info in infos),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="synthetic faces generated (90%% pool)")
    parser.add_argument("--train", type=int, default=512, help="balanced train draw per attribute")
    parser.add_argument("--val", type=int, default=512, help="balanced validation draw per attribute")
    parser.add_argument("--layers", default="auto", help="layer selection (auto: every block output)")
    parser.add_argument("--attributes", default=",".join(ATTRIBUTES))
    parser.add_argument("--layers-per-unit", type=int, default=4, help="faceprobe's layers per forward")
    parser.add_argument(
        "--memory-gb",
        default="4",
        help="faceprobe's run.memory_gb (groups above it stream through the store); a comma list runs "
        "faceprobe once per value, an empty one not at all",
    )
    parser.add_argument(
        "--store-dtype", default="float32", choices=["float32", "float16"], help="faceprobe's run.store_dtype"
    )
    parser.add_argument("--no-peer", action="store_true", help="run the faceprobe side(s) only")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, folder, memory_gb = args.child
        print(json.dumps(_child(side, Path(folder), float(memory_gb))))
        return

    cases = [("faceprobe", gb) for gb in args.memory_gb.split(",") if gb] + (
        [] if args.no_peer else [("peer", "0")]
    )
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        data = _prepare(Path(tmp), args)
        print(
            f"# {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
            f"ResNet-50 random {args.size}x{args.size}, {data['layers']} layers "
            f"({data['features']:,} features per image); "
            f"{len(args.attributes.split(','))} attributes x {args.train} train + {args.val} val from a pool "
            f"of {data['pool']} synthetic faces: {data['union']} images extracted; faceprobe "
            f"{args.layers_per_unit} layers per unit, store {args.store_dtype}; "
            f"shortened draws: {data['shortened'] or 'none'}"
        )
        results = {}
        for side, memory_gb in cases:
            name = side if side == "peer" else f"faceprobe memory_gb={memory_gb}"
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
    if "peer" in results:
        peer = results.pop("peer")
        for name, ours in results.items():
            _compare(name, ours, peer)


def _compare(name: str, ours: dict, peer: dict) -> None:
    def working(r: dict) -> float:
        return r["peak_gib"] - r["base_gib"]

    print(
        f"{name} vs peer: {peer['seconds'] / ours['seconds']:.2f}x faster; peak memory "
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
