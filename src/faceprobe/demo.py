"""The offline end-to-end demo: synthetic faces -> a trained recognition CNN -> where it encodes attributes.

Everything it needs ships with the package, so a researcher sees the whole method work on a laptop in
minutes: faces with planted attributes and identities are generated, a small residual network learns the
identities by softmax, and every block output of it is probed for every planted attribute (whole layer,
top-8 VIP channels, top-8 VIP neurons). Control_Random (random labels) must stay at chance everywhere.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from faceprobe.data.celeba import celeba_dataset
from faceprobe.data.dataset import FaceDataset
from faceprobe.data.images import eval_transform
from faceprobe.data.sampling import sample_protocol
from faceprobe.data.synth import generate
from faceprobe.extract import block_layers
from faceprobe.models import build_model
from faceprobe.models.checkpoint import save_checkpoint
from faceprobe.report.figures import plot_depth_curves
from faceprobe.results import to_frame, write_results
from faceprobe.run.config import ProbeConfig
from faceprobe.run.work import Draws, probe_rows
from faceprobe.train.recognition import train_recognition, train_transform

__all__ = ["DemoConfig", "DemoResult", "best_layers", "run_demo"]

MODEL_NAME = "small-synthetic"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the two-minute variant the tests run."""

    identities: int = 80
    images_per_identity: int = 40
    size: int = 112  # synthetic image size
    input_size: int = 64  # network input: the thesis preprocessing scaled down, so a CPU trains in a minute
    epochs: int = 30
    lr: float = 0.1  # the thesis uses 0.005 for ResNet-50 on VGGFace2; a small net from scratch needs more
    n_train: int = 600
    n_val: int = 1200  # the validation set decides: +-5 points around chance is 3 standard errors here
    held_out: float = 0.2
    batch_size: int = 64
    seed: int = 0
    attributes: tuple[str, ...] | None = None  # None: every attribute in the data

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        return cls(
            identities=60,
            images_per_identity=50,
            epochs=25,
            n_train=600,
            n_val=1000,
            seed=seed,
            attributes=(
                "Eyeglasses",
                "Wearing_Hat",
                "Smiling",
                "Male",
                "Bangs",
                "Blond_Hair",
                "Control_Random",
            ),
        )


@dataclass
class DemoResult:
    results: pd.DataFrame
    results_path: Path
    figure_path: Path
    identity_accuracy: float
    seconds: dict[str, float]


StepReporter = Callable[[str, int | None], Callable[[int], None]]
"""``step(description, total)`` starts a progress step and returns ``advance(k)``."""


def _silent(description: str, total: int | None) -> Callable[[int], None]:
    return lambda k: None


def run_demo(out: str | Path, config: DemoConfig = DemoConfig(), step: StepReporter = _silent) -> DemoResult:
    """Run the whole demo into ``out``: data-*/, model/, results.parquet, accuracy_vs_depth.png.

    Synthetic data already generated in ``out`` with the same sizes and seed is reused.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    seconds: dict[str, float] = {}

    with _timed(seconds, "synthesise"):
        data_dir = (
            out / f"data-{config.identities}x{config.images_per_identity}-{config.size}px-seed{config.seed}"
        )
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
            )
        dataset = celeba_dataset(data_dir, kind="synthetic")

    with _timed(seconds, "train"):
        model_dir = out / "model"
        model, identity_accuracy = _train_recognizer(dataset, config, model_dir, step)

    with _timed(seconds, "probe"):
        draws = _draws(dataset, config)
        layers = block_layers(model, torch.zeros(1, 3, config.input_size, config.input_size))
        rows, _ = probe_rows(
            model,
            eval_transform(config.input_size),
            dataset,
            draws,
            layers,
            asdict(ProbeConfig(single_units=False, vip_study=0)),
            batch_size=128,
            seed=config.seed,
            progress=step(f"probing {len(layers)} block outputs", len(draws.images())),
        )
        model_keys = {
            "model": MODEL_NAME,
            "architecture": "small",
            "weights": f"checkpoint:{model_dir}",
            "seed": config.seed,
        }
        results = to_frame([{**model_keys, **row} for row in rows])
        results_path = write_results(results, out / "results.parquet")
        figure_path = plot_depth_curves(
            results,
            out / "accuracy_vs_depth.png",
            title=f"Where {MODEL_NAME} encodes synthetic attributes (validation accuracy over depth)",
        )
    (out / "demo_config.json").write_text(pd.Series(asdict(config)).to_json(indent=2))
    return DemoResult(results, results_path, figure_path, identity_accuracy, seconds)


def _draws(dataset: FaceDataset, config: DemoConfig) -> Draws:
    """The run's protocol (a balanced draw per attribute from the train + val pool, no test images)."""
    attributes = list(config.attributes or dataset.attribute_names)
    protocol = sample_protocol(
        dataset, attributes, n_train=config.n_train, n_val=config.n_val, n_test=0, seed=config.seed
    )
    assert dataset.attributes is not None  # synthetic faces are labelled
    return Draws.from_protocol(protocol, dataset.attributes[attributes])


def _train_recognizer(
    dataset: FaceDataset, config: DemoConfig, out: Path, step: StepReporter
) -> tuple[nn.Module, float]:
    """Train the recognition network on the train-split identities, holding out images of each identity."""
    assert dataset.partitions is not None and dataset.identities is not None  # synthetic faces have both
    ids = dataset.partitions.index[dataset.partitions == 0]
    identity = dataset.identities.loc[ids]
    classes = {v: i for i, v in enumerate(sorted(identity.unique()))}
    rng = np.random.default_rng(config.seed)
    held = rng.random(len(ids)) < config.held_out
    targets = identity.map(classes).to_numpy()
    size = config.input_size
    train_set = dataset.torch_dataset(ids[~held], targets[~held], transform=train_transform(size))
    val_set = dataset.torch_dataset(ids[held], targets[held], transform=eval_transform(size))
    model = build_model("small", len(classes))
    advance = step(f"training recognition on {len(classes)} identities", config.epochs)
    result = train_recognition(
        model,
        train_set,
        val_set,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=lambda info: advance(1) if info["event"] == "epoch" else None,
    )
    model.eval()
    save_checkpoint(
        model,
        out,
        {
            "architecture": "small",
            "num_classes": len(classes),
            "input_size": config.input_size,
            "data": "synthetic",
            "seed": config.seed,
            "metrics": {"held_out_identity_accuracy": result.val_acc},
        },
    )
    return model, float(result.val_acc)


def best_layers(results: pd.DataFrame) -> pd.DataFrame:
    """Per attribute, the layer where the whole-layer probe is best, with the three accuracies there."""
    val = results[results["split"] == "val"]
    acc = val.pivot_table(index=["attribute", "depth", "layer"], columns="representation", values="accuracy")
    acc.columns = [f"{c}_accuracy" for c in acc.columns]
    acc = acc.reset_index()
    best = acc.loc[acc["layer_accuracy"].fillna(-1).groupby(acc["attribute"]).idxmax()]
    return best.sort_values("layer_accuracy", ascending=False).reset_index(drop=True)


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
