"""`faceprobe train`: whole jobs on a tiny CelebA-layout set, checkpoints that load back and can be probed,
the epoch kept by LFW verification."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from faceprobe.cli import app
from faceprobe.errors import FaceprobeError
from faceprobe.extract.hooks import block_layers
from faceprobe.models import load_model
from faceprobe.models.checkpoint import load_checkpoint
from faceprobe.results import BASELINE_COLUMNS
from faceprobe.train.jobs import Recipe, lfw_score

N_IDS, PER_ID, SIZE = 4, 10, 32
TINY = ["--epochs", "2", "--input-size", "32", "--batch-size", "8", "--lr", "0.05", "--no-amp"]


def _face(identity: int, k: int) -> Image.Image:
    """An identity's fixed pattern plus noise; brightness and redness are the two attributes."""
    prototype = np.random.default_rng(identity).integers(0, 256, (SIZE, SIZE, 3))
    noise = np.random.default_rng(1000 + 17 * identity + k).normal(0, 20, (SIZE, SIZE, 3))
    pixels = prototype + noise + (60 if k % 2 else -60)
    pixels[..., 0] += 60 if k % 3 == 0 else 0
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    """4 identities x 10 images in CelebA's layout; each identity's images 0-7 train, 8 val, 9 test."""
    root = tmp_path_factory.mktemp("tiny-celeba")
    (root / "img_align_celeba").mkdir()
    rows = []
    for identity in range(1, N_IDS + 1):
        for k in range(PER_ID):
            name = f"{len(rows) + 1:06d}.png"
            _face(identity, k).save(root / "img_align_celeba" / name)
            rows.append((name, identity, {8: 1, 9: 2}.get(k, 0), 1 if k % 2 else -1, 1 if k % 3 == 0 else -1))
    (root / "list_attr_celeba.txt").write_text(
        f"{len(rows)}\nBright Red\n" + "".join(f"{n} {b} {r}\n" for n, _, _, b, r in rows)
    )
    (root / "identity_CelebA.txt").write_text("".join(f"{n} {i}\n" for n, i, *_ in rows))
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, _, p, *_ in rows))
    return root


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_recognition_checkpoint_round_trips_and_is_probeable(celeba, tmp_path):
    out = tmp_path / "run"
    _invoke("recognition", "--model", "small", "--data", f"celeba:{celeba}", "--out", str(out), *TINY)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["architecture"] == "small" and metadata["num_classes"] == N_IDS
    assert metadata["epochs"] == 2 and metadata["seed"] == 0 and metadata["input_size"] == SIZE
    assert metadata["data"] == f"celeba:{celeba}" and metadata["task"] == "recognition"
    assert metadata["recipe"]["head"] == "softmax" and metadata["recipe"]["uniform_identities"]
    assert metadata["n_train"] + metadata["n_held_out"] == N_IDS * 8  # the training partition
    assert 0 <= metadata["metrics"]["held_out_identity_accuracy"] <= 1
    assert len(metadata["history"]) == 2 and (out / "last" / "state.safetensors").is_file()

    model, loaded_metadata = load_checkpoint(out)
    assert loaded_metadata == metadata
    layers = block_layers(model, torch.zeros(2, 3, SIZE, SIZE))
    assert [layer.name for layer in layers][-1] == "classifier"
    probed = load_model("small", f"checkpoint:{out}")
    assert probed.preprocessing.input_size == (SIZE, SIZE)

    # Done: rerunning resumes at the end (no epoch retrained); more epochs continue the same run.
    _invoke("recognition", "--data", f"celeba:{celeba}", "--out", str(out), *TINY)
    assert json.loads((out / "metadata.json").read_text())["history"] == metadata["history"]


def test_attribute_baseline_table(celeba, tmp_path):
    out = tmp_path / "baseline"
    _invoke("attributes", "--model", "small", "--data", f"celeba:{celeba}", "--out", str(out), *TINY)
    table = pd.read_parquet(out / "baseline.parquet")
    assert list(table.columns) == list(BASELINE_COLUMNS)
    assert list(table["attribute"]) == ["Bright", "Red"] and set(table["split"]) == {"test"}
    assert table["accuracy"].between(0, 1).all() and set(table["source"]) == {"multitask small"}
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["task"] == "attributes" and metadata["attributes"] == ["Bright", "Red"]
    assert metadata["n_test"] == N_IDS and metadata["num_classes"] == 2


def test_lfw_score_is_verification_accuracy(tmp_path):
    # Two people, two folds of one same and one different pair each.
    for name, identity in (("Ann_A", 1), ("Bob_B", 2)):
        (tmp_path / "lfw" / name).mkdir(parents=True)
        for k in (1, 2):
            _face(identity, k).save(tmp_path / "lfw" / name / f"{name}_{k:04d}.jpg")
    (tmp_path / "pairs.txt").write_text("2 1\nAnn_A 1 2\nAnn_A 1 Bob_B 1\nBob_B 1 2\nAnn_A 2 Bob_B 2\n")
    loaded = load_model("small", "random", num_classes=2, input_size=(SIZE, SIZE))
    score = lfw_score(tmp_path, loaded.preprocessing.transform())
    assert score(loaded.module) in (0.0, 0.5, 1.0)
    assert Recipe().epochs == 50 and Recipe().lr == 0.005 and Recipe().batch_size == 64


def _lfw(root: Path) -> Path:
    """LFW's layout with the tiny set's 4 people (4 other images each); 2 folds of 12 same, 12 other pairs."""
    people = [f"Person_{identity}" for identity in range(1, N_IDS + 1)]
    for identity, name in enumerate(people, start=1):
        (root / "lfw" / name).mkdir(parents=True)
        for k in range(1, 5):
            _face(identity, 20 + k).save(root / "lfw" / name / f"{name}_{k:04d}.jpg")
    same = [f"{p} {a} {b}" for p in people for a, b in itertools.combinations(range(1, 5), 2)]
    pairs = ((1, 2), (3, 4), (2, 3), (4, 1))
    different = [f"{p} {a} {q} {b}" for p, q in itertools.combinations(people, 2) for a, b in pairs]
    (root / "pairs.txt").write_text(
        "\n".join(["2 12", *same[::2], *different[::2], *same[1::2], *different[1::2]])
    )
    return root


def test_lfw_verification_picks_the_kept_epoch(celeba, tmp_path):
    lfw, out, epochs = _lfw(tmp_path / "lfw-data"), tmp_path / "run", 6
    data = ["--data", f"celeba:{celeba}", "--out", str(out), "--lfw", str(lfw)]
    _invoke("recognition", *data, "--epochs", str(epochs), *TINY[2:])
    metadata = json.loads((out / "metadata.json").read_text())
    scores = [record["score"] for record in metadata["history"]]
    best = metadata["best_epoch"]
    assert len(scores) == epochs and best == scores.index(max(scores)) + 1
    assert metadata["metrics"]["lfw_verification_accuracy"] == max(scores)
    assert metadata["metrics"]["held_out_identity_accuracy"] == metadata["history"][best - 1]["val_acc"]
    assert metadata["recipe"]["lfw"] == str(lfw)
    # This seeded run verifies worse after its best epoch, so the last epoch's weights would score otherwise.
    assert best < epochs and scores[-1] != max(scores)
    kept = load_model("small", f"checkpoint:{out}")
    assert lfw_score(lfw, kept.preprocessing.transform())(kept.module) == pytest.approx(max(scores))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["recognition", "--data", "nope:/x"], "unknown kind 'nope'"),
        (["recognition", "--data", "celeba:{celeba}", "--head", "sphereface"], "unknown head 'sphereface'"),
        (["attributes", "--data", "celeba:{celeba}", "--model", "resnet51"], "unknown model 'resnet51'"),
    ],
)
def test_user_errors_are_one_line(celeba, tmp_path, args, fragment):
    """FaceprobeError, which the entry point prints as one line with exit status 2."""
    args = [a.format(celeba=celeba) for a in args]
    result = CliRunner().invoke(app, ["train", *args, "--out", str(tmp_path), *TINY])
    assert isinstance(result.exception, FaceprobeError), repr(result.exception)
    assert fragment in str(result.exception) and "\n" not in str(result.exception)


@pytest.mark.parametrize("command", [[], ["recognition"], ["attributes"]])
def test_help(command):
    result = CliRunner().invoke(app, ["train", *command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
