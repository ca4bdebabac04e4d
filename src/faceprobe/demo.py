"""The offline end-to-end demo: synthetic faces -> a trained recognition CNN -> a study -> its report.

Everything it needs ships with the package, so a researcher sees the whole method work on a laptop in
minutes, through the same runner and report as ``faceprobe run`` and ``faceprobe report``: faces with
planted attributes and identities are generated, a small residual network learns the identities by softmax,
the same network learns the attributes themselves (the multitask baseline, the ceiling of Table 5.2), and
a study probes every block output and residual branch of the face network, and of the same network with
random weights, for every attribute (whole layer, top-8 VIP channels and neurons, best single units),
samples neurons for the VIP study and ablates the top-VIP neurons of one block. Beyond the thesis it
probes targets of other kinds the faces plant too: the head's yaw (continuous, PLS regression), the hair
colour (four classes, PLS-DA + QDA) and Random_Value (a continuous control). The report of that run opens
in a browser. Control_Random and Random_Value (random labels) must stay at chance everywhere.

Layout of ``OUT``::

    OUT/data-*/                the synthetic faces (reused when already generated with the same sizes)
    OUT/model/                 the face-recognition network (a faceprobe checkpoint folder)
    OUT/baseline/              the multitask attribute network and its baseline.parquet
    OUT/run/                   the study's run folder (what ``faceprobe run`` writes)
    OUT/report/index.html      its report (what ``faceprobe report`` writes)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from faceprobe.atomic import atomic_write_text
from faceprobe.data.celeba import celeba_dataset
from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import FaceImages
from faceprobe.data.synth import SYNTH_ATTRIBUTES, generate
from faceprobe.models import load_model
from faceprobe.models.checkpoint import save_checkpoint
from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from faceprobe.results import to_frame, write_results
from faceprobe.run import parse_config, read_table, run_study
from faceprobe.run.config import RunConfig
from faceprobe.train.attributes import attribute_accuracy, train_attributes
from faceprobe.train.jobs import BASELINE_FILE
from faceprobe.train.recognition import train_recognition, train_transform

__all__ = ["DemoConfig", "DemoResult", "best_layers", "run_demo", "study_config"]

MODEL_NAME = "demo-face"
"""The study's name for the trained network; its results' ``model`` is ``demo-face#DIGEST/sSEED``."""
RANDOM_NAME = "demo-random"
"""The same architecture with random weights: the second weight origin of the report."""
BASELINE_BATCH = 32  # twice the steps of batch 64 for the same work: the baseline learns in fewer epochs


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the two-minute variant the tests run (the full one takes ~5)."""

    identities: int = 80
    images_per_identity: int = 40
    size: int = 112  # synthetic image size
    input_size: int = 64  # network input: the thesis preprocessing scaled down, so a CPU trains in a minute
    epochs: int = 30
    lr: float = 0.1  # the thesis uses 0.005 for ResNet-50 on VGGFace2; a small net from scratch needs more
    baseline_epochs: int = 20  # the multitask attribute network (from scratch, on the studied attributes)
    n_train: int = 600
    n_val: int = 1200  # the validation set decides: +-5 points around chance is 3 standard errors here
    n_test: int = -1  # every image of the test identities (about 10% of them) is scored too
    held_out: float = 0.2
    batch_size: int = 64
    seed: int = 0
    # Train in bfloat16 (autocast) where the CPU computes it natively (AVX-512 BF16 or AMX), about 40% less
    # time per step; other CPUs would emulate it, slower than float32, so they train in float32 regardless.
    amp: bool = True
    attributes: tuple[str, ...] | None = None  # None: every binary attribute in the data
    # Targets beyond binary, from the faces' targets.csv, probed beside the attributes (not in the baseline,
    # which learns binary attributes): the yaw drawn per image, the hair colour, and a continuous control.
    targets: tuple[str, ...] = ("Yaw", "Hair_Color", "Random_Value")
    # Every block output (what layers = "auto" selects) and each block's residual branch before the skip adds
    # to it, for the thesis's post-skip vs residual-internal view (Fig. 5.8); about a second more per model.
    layers: str = "backbone.stem, backbone.stage?.0, backbone.stage?.0.residual, embedding, classifier"
    vip_study: int = 50  # neurons per (layer, attribute) probed alone, for the VIP study (Fig. 5.9)
    ablated_layer: str = "backbone.stage1.0"  # the block whose top-VIP neurons are zeroed (Table 5.4)
    ablation_fractions: tuple[float, ...] = (0.05, 0.2)
    ablation_attributes: tuple[str, ...] = ("Eyeglasses", "Wearing_Hat")

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        return cls(
            identities=60,
            images_per_identity=50,
            # Drawn at 80 pixels: the networks see 64 (resized to 73, centre-cropped), and the study decodes
            # every face several times, so 112-pixel files only cost time.
            size=80,
            epochs=12,
            # On turned faces 8 epochs left the baseline at 80% on Wearing_Hat; 12 reach 98% (seed 0).
            baseline_epochs=12,
            n_train=600,
            n_val=1000,
            seed=seed,
            # The middle block: fewer, smaller layers follow it, each probed again per attribute and fraction.
            ablated_layer="backbone.stage2.0",
            attributes=(
                "Eyeglasses",
                "Wearing_Hat",
                "Smiling",
                "Male",
                "Bangs",
                "Blond_Hair",
                "Big_Nose",
                "Control_Random",
            ),
        )


@dataclass
class DemoResult:
    """What a demo wrote: the run folder, its report page, and how the networks trained."""

    run_dir: Path
    report_path: Path
    results: pd.DataFrame  # the run's results table (``faceprobe.run.read_table(run_dir, "results")``)
    baseline: pd.DataFrame  # the multitask baseline: test accuracy per attribute
    identity_accuracy: float
    seconds: dict[str, float]


StepReporter = Callable[[str, int | None], Callable[[int], None]]
"""``step(description, total)`` starts a progress step and returns ``advance(k)``."""


def _silent(description: str, total: int | None) -> Callable[[int], None]:
    return lambda k: None


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), step: StepReporter = _silent) -> DemoResult:
    """Run the whole demo into ``out``: data-*/, model/, baseline/, run/ and report/index.html.

    Synthetic data already generated in ``out`` with the same sizes and seed is reused; the networks, the
    run folder and the report are made anew (a run folder keeps what it finished, and a new network is
    another model, so an old run folder is replaced rather than resumed).
    """
    out = Path(out).resolve()  # the study records absolute paths
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}

    with _timed(seconds, "synthesise"):
        data_dir = _synthesise(out, config, step)
        dataset = celeba_dataset(data_dir, kind="synthetic")

    with _timed(seconds, "train"):
        faces = _DecodedFaces(dataset, config)
        model_dir = out / "model"
        identity_accuracy = _train_recognizer(dataset, faces, config, model_dir, step)

    with _timed(seconds, "baseline"):
        baseline = _train_baseline(dataset, faces, config, out / "baseline", step)

    with _timed(seconds, "study"):
        run_dir = out / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        study = study_config(config, data_dir, model_dir, out / "baseline" / BASELINE_FILE, out)
        run_study(study, run_dir, progress=step)

    with _timed(seconds, "report"):
        shutil.rmtree(out / "report", ignore_errors=True)
        report_path = build_report([load_run(run_dir)], out / "report")
    atomic_write_text(out / "demo_config.json", pd.Series(asdict(config)).to_json(indent=2))
    return DemoResult(
        run_dir, report_path, read_table(run_dir, "results"), baseline, identity_accuracy, seconds
    )


def study_config(
    config: DemoConfig, data_dir: Path, model_dir: Path, baseline: Path, base: Path
) -> RunConfig:
    """The demo's study, as a study file would give it (``faceprobe run`` reads the same keys)."""
    models: list[dict[str, Any]] = [
        {
            "architecture": "small",
            "name": MODEL_NAME,
            "weights": [f"checkpoint:{model_dir}"],
            "seeds": [config.seed],
            "layers": config.layers,
            "input_size": config.input_size,
        },
        {
            "architecture": "small",
            "name": RANDOM_NAME,
            "weights": ["random"],
            "seeds": [config.seed],
            "layers": config.layers,
            "input_size": config.input_size,
        },
    ]
    raw = {
        "data": {
            "spec": f"synthetic:{data_dir}",
            "attributes": [*(config.attributes or SYNTH_ATTRIBUTES), *config.targets],
            "train": config.n_train,
            "val": config.n_val,
            "test": config.n_test,
            "seed": config.seed,
        },
        "models": models,
        "probe": {"vip_study": config.vip_study, "single_units": True},
        "ablation": {
            "depths": [config.ablated_layer],
            "fractions": list(config.ablation_fractions),
            "attributes": list(config.ablation_attributes),
        },
        "run": {"batch_size": 128, "layers_per_unit": 16},
        "baseline": {"path": str(baseline)},
    }
    return parse_config(raw, "faceprobe demo", base=base)


def _synthesise(out: Path, config: DemoConfig, step: StepReporter) -> Path:
    """The demo's synthetic faces in ``out``, generated unless a finished folder of the same sizes exists."""
    sizes = f"{config.identities}x{config.images_per_identity}-{config.size}px"
    data_dir = out / f"data-{sizes}-seed{config.seed}-yaw-age"  # drawn with yaw and age
    if not (data_dir / "README.md").exists():  # written last: without it the folder is a crashed attempt
        shutil.rmtree(data_dir, ignore_errors=True)
        total = config.identities * config.images_per_identity
        generate(
            data_dir,
            config.identities,
            config.images_per_identity,
            config.size,
            config.seed,
            progress=step("synthesising faces", total),
            yaw_and_age=True,
        )
    return data_dir


class _DecodedFaces:
    """Every face of the dataset decoded once and resized as the networks' preprocessing first does, in RAM.

    Both trainings read the same few thousand small JPEGs every epoch, and decoding and resizing them again
    each time was a large part of their time. The transforms' own resize finds the size already right and
    returns the image unchanged, so the networks see exactly the pixels they would read from disk.
    """

    def __init__(self, dataset: FaceDataset, config: DemoConfig) -> None:
        size = (config.input_size, config.input_size)
        pre = load_model("small", "random", input_size=size).preprocessing
        resized = pre.resize_shorter is not None and pre.crop is None  # else the crop comes first
        first = v2.Resize(pre.resize_shorter) if resized else nn.Identity()
        self._images = {i: first(dataset.open_image(i)) for i in dataset.ids}

    def images(
        self, ids: pd.Index, targets: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]
    ) -> FaceImages:
        """``ids`` with their ``targets`` as a torch dataset of ``(transform(image), target)``."""
        return FaceImages(list(ids), targets, transform, opener=self._images.__getitem__)


def _train_recognizer(
    dataset: FaceDataset, faces: _DecodedFaces, config: DemoConfig, out: Path, step: StepReporter
) -> float:
    """Train the recognition network on the train-split identities, holding out images of each identity;
    saves it as a checkpoint folder in ``out`` and returns its held-out identity accuracy."""
    assert dataset.partitions is not None and dataset.identities is not None  # synthetic faces have both
    ids = dataset.partitions.index[dataset.partitions == 0]
    identity = dataset.identities.loc[ids]
    classes = {v: i for i, v in enumerate(sorted(identity.unique()))}
    rng = np.random.default_rng(config.seed)
    held = rng.random(len(ids)) < config.held_out
    targets = identity.map(classes).to_numpy()
    size = (config.input_size, config.input_size)
    loaded = load_model("small", "random", num_classes=len(classes), seed=config.seed, input_size=size)
    pre = loaded.preprocessing  # the study reads the checkpoint with the same preprocessing
    augment = train_transform(config.input_size, mean=pre.mean, std=pre.std)
    train_set = faces.images(ids[~held], targets[~held], augment)
    val_set = faces.images(ids[held], targets[held], pre.transform())
    model: nn.Module = loaded.module
    advance = step(f"training recognition on {len(classes)} identities", config.epochs)
    with _fast_layout(model):
        result = train_recognition(
            model,
            train_set,
            val_set,
            epochs=config.epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            seed=config.seed,
            progress=lambda info: advance(1) if info["event"] == "epoch" else None,
            amp=config.amp and _native_bfloat16(),
        )
    model.eval()
    save_checkpoint(
        model,
        out,
        {
            "architecture": "small",
            "num_classes": len(classes),
            "preprocessing": pre.to_dict(),
            "input_size": config.input_size,
            "task": "recognition",
            "data": "synthetic",
            "seed": config.seed,
            "metrics": {"held_out_identity_accuracy": result.val_acc},
        },
    )
    return float(result.val_acc)


def _train_baseline(
    dataset: FaceDataset, faces: _DecodedFaces, config: DemoConfig, out: Path, step: StepReporter
) -> pd.DataFrame:
    """The multitask baseline (Table 5.2's ceiling): the same small network trained from scratch to predict
    the studied attributes at once (one logit each, binary cross-entropy), as ``faceprobe train attributes``
    does for every attribute of a dataset; returns its accuracy per attribute on the test identities.

    Only the studied attributes: on 39 at once the mean loss gives each a 39th of the gradient, and the small
    network needs three times the epochs to see eyeglasses. Saved in ``out`` as a checkpoint folder with its
    ``baseline.parquet``.
    """
    assert dataset.attributes is not None and dataset.partitions is not None  # synthetic faces have both
    labels = dataset.attributes[list(config.attributes or dataset.attributes.columns)]
    partition = dataset.partitions.reindex(labels.index)
    size = (config.input_size, config.input_size)
    loaded = load_model("small", "random", num_classes=labels.shape[1], seed=config.seed, input_size=size)
    pre = loaded.preprocessing
    augment = train_transform(config.input_size, grayscale=0.0, mean=pre.mean, std=pre.std)
    train, val, test = (
        faces.images(part.index, part.to_numpy(), augment if p == 0 else pre.transform())
        for p, part in ((p, labels[partition == p]) for p in (0, 1, 2))
    )
    advance = step(f"training the multitask baseline on {labels.shape[1]} attributes", config.baseline_epochs)
    with _fast_layout(loaded.module):
        result = train_attributes(
            loaded.module,
            train,
            val,
            config.baseline_epochs,
            lr=config.lr,
            batch_size=BASELINE_BATCH,
            seed=config.seed,
            keep_best=True,  # the epoch with the best mean accuracy on the validation identities
            progress=lambda info: advance(1) if info["event"] == "epoch" else None,
            amp=config.amp and _native_bfloat16(),
        )
    accuracy = attribute_accuracy(loaded.module, test)
    source = "multitask small (faceprobe demo)"
    rows = [
        {"attribute": name, "accuracy": float(a), "split": "test", "source": source}
        for name, a in zip(labels.columns, accuracy, strict=True)
    ]
    shutil.rmtree(out, ignore_errors=True)
    save_checkpoint(
        loaded.module,
        out,
        {
            "architecture": "small",
            "num_classes": labels.shape[1],
            "preprocessing": pre.to_dict(),
            "input_size": config.input_size,
            "task": "attributes",
            "data": "synthetic",
            "seed": config.seed,
            "attributes": list(labels.columns),
            "best_epoch": result.best_epoch,
            "metrics": {"mean_test_accuracy": float(accuracy.mean())},
        },
    )
    table = to_frame(rows, "baseline")
    write_results(table, out / BASELINE_FILE)
    return table


def best_layers(results: pd.DataFrame, name: str = MODEL_NAME) -> pd.DataFrame:
    """Per attribute, the layer where the whole-layer probe of the model called ``name`` is best on the
    validation split, with its top-k channel and neuron scores there (a run's results table), in each
    target's headline metric (``metric``: accuracy, balanced accuracy or R^2, not the MAE)."""
    val = results[(results["split"] == "val") & results["model"].str.startswith(f"{name}#")]
    val = val[val["representation"].isin(["layer", "channels", "neurons"]) & (val["metric"] != "mae")]
    acc = val.pivot_table(index=["attribute", "depth", "layer"], columns="representation", values="accuracy")
    acc = acc.reindex(columns=["layer", "channels", "neurons"])
    acc.columns = [f"{c}_accuracy" for c in acc.columns]
    acc = acc.reset_index().merge(val.groupby("attribute")["metric"].first().reset_index(), on="attribute")
    best = acc.loc[acc["layer_accuracy"].fillna(-1).groupby(acc["attribute"]).idxmax()]
    return best.sort_values("layer_accuracy", ascending=False).reset_index(drop=True)


def _native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX), so mixed precision pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@contextmanager
def _fast_layout(model: nn.Module) -> Iterator[None]:
    """Train ``model`` with its tensors laid out channels-last (the same computation, about 15% less time per
    step on a CPU), and hand it back in the usual layout, which checkpoints store."""
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
