"""`faceprobe verify`: identity separation of embeddings, the broken-network warning (silent on a network
`faceprobe train` trained, loud on its random twin), LFW pairs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from faceprobe.cli import app
from faceprobe.data.registry import load_dataset
from faceprobe.data.synth import generate
from faceprobe.errors import FaceprobeError
from faceprobe.models import load_model
from faceprobe.verification import check_identities, check_lfw_pairs, embed, pick_images


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("faces"), identities=6, images_per_identity=4, size=32, seed=0, workers=1
    )


def _clustered(n_people: int, per: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, 64))
    x = np.repeat(centres, per, axis=0) + noise * rng.standard_normal((n_people * per, 64))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(n_people), per)


def test_a_working_embedding_separates_identities():
    x, ids = _clustered(10, 4, noise=0.3)
    check = check_identities(x, ids)
    assert check.warning is None and check.nearest_neighbour == 1.0
    assert check.same > 0.8 and abs(check.different) < 0.2
    assert check.chance == pytest.approx(3 / 39) and (check.n_images, check.n_identities) == (40, 10)


def test_broken_embeddings_warn():
    # Identity drowned in noise: people equally similar, neighbours at chance.
    x, ids = _clustered(10, 4, noise=100.0)
    warning = check_identities(x, ids).warning
    assert "about equally similar" in warning and "near chance" in warning and "mis-loaded" in warning
    collapsed, ids = _clustered(10, 4, noise=0.3)
    collapsed = collapsed + 3.0  # everything in one direction, as random CNNs map faces
    collapsed /= np.linalg.norm(collapsed, axis=1, keepdims=True)
    assert "different people look alike" in check_identities(collapsed, ids).warning


def test_pick_images_is_seeded_and_needs_repeated_identities():
    identities = pd.Series([0, 0, 0, 1, 1, 2, 3, 3, 3, 3], index=[f"{i}.jpg" for i in range(10)])
    drawn = pick_images(identities, max_identities=2, per_identity=2, seed=1)
    assert drawn.equals(pick_images(identities, 2, 2, seed=1))
    assert len(drawn) == 4 and drawn.value_counts().tolist() == [2, 2] and 2 not in drawn.to_numpy()
    with pytest.raises(FaceprobeError, match="fewer than 2 identities"):
        pick_images(pd.Series([0, 0, 1], index=["a", "b", "c"]), 5, 5)


def test_embed_is_unit_norm_and_follows_the_preprocessing(faces):
    dataset = load_dataset(f"synthetic:{faces}")
    ids = list(dataset.ids[:5])
    loaded = load_model("iresnet18", input_size=(32, 32))
    e = embed(loaded, dataset, ids, batch_size=2)
    assert e.shape == (5, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    x = torch.stack([loaded.preprocessing.transform()(dataset.open_image(i)) for i in ids])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(loaded.module(x), dim=1).numpy()
    np.testing.assert_allclose(e, expected, atol=1e-5)


def test_verify_command_warns_on_random_weights(faces):
    args = [
        "verify",
        "--model",
        "small",
        "--data",
        f"synthetic:{faces}",
        "--input-size",
        "32x32",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "small/random/s0" and report["n_images"] == 24 and report["n_identities"] == 6
    assert "mis-loaded" in report["warning"] and "WARNING" in result.stderr
    table = CliRunner().invoke(app, args)
    assert "nearest-neighbour identity" in table.stdout and "WARNING" in table.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """Faces from ``faceprobe synth`` (10 people x 12) and ``faceprobe train recognition`` run on them."""
    root = tmp_path_factory.mktemp("trained")
    faces, out = root / "faces", root / "run"
    synth = ["synth", "--out", str(faces), "--identities", "10", "--images-per-identity", "12"]
    train = ["train", "recognition", "--model", "small", "--data", f"synthetic:{faces}", "--out", str(out)]
    tiny = ["--epochs", "10", "--input-size", "32", "--batch-size", "16", "--lr", "0.1", "--device", "cpu"]
    for args in ([*synth, "--size", "32", "--workers", "1"], [*train, *tiny]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output + repr(result.exception)
    return faces, out


def test_verify_passes_a_trained_network_and_warns_on_its_random_twin(trained):
    faces, out = trained

    def verify(*options: str) -> tuple[dict, str]:
        args = ["verify", "--model", "small", "--data", f"synthetic:{faces}", "--device", "cpu", *options]
        result = CliRunner().invoke(app, [*args, "--format", "json"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return json.loads(result.stdout), result.stderr

    # The checkpoint brings its own 32x32 preprocessing; all 10 people are drawn, 2 never seen in training.
    report, stderr = verify("--weights", f"checkpoint:{out / 'model.safetensors'}")
    assert (report["n_images"], report["n_identities"]) == (50, 10)
    assert report["warning"] is None and "WARNING" not in stderr
    assert report["same"] - report["different"] > 0.5 and report["nearest_neighbour"] >= 0.7  # chance 8%
    random, stderr = verify("--weights", "random", "--input-size", "32")
    assert "mis-loaded" in random["warning"] and "WARNING" in stderr
    assert random["same"] - random["different"] < 0.1


def test_lfw_pairs(faces, tmp_path):
    people = ["Ann_A", "Bob_B", "Cy_C", "Di_D"]
    for k, name in enumerate(people):
        (tmp_path / "lfw" / name).mkdir(parents=True)
        for j in range(3):
            shutil.copy(
                faces / "img_align_celeba" / f"{4 * k + j + 1:06d}.jpg",
                tmp_path / "lfw" / name / f"{name}_{j + 1:04d}.jpg",
            )
    lines = ["2 2", "Ann_A 1 2", "Bob_B 1 3", "Ann_A 1 Bob_B 1", "Cy_C 2 Di_D 3"]
    lines += ["Cy_C 1 2", "Di_D 2 3", "Ann_A 3 Di_D 1", "Bob_B 2 Cy_C 3"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    loaded = load_model("small", input_size=(32, 32))
    verification = check_lfw_pairs(loaded, load_dataset(f"lfw:{tmp_path}"), batch_size=4)
    assert len(verification.fold_accuracies) == 2 and 0 <= verification.accuracy <= 1
    result = CliRunner().invoke(
        app,
        ["verify", "--model", "small", "--data", f"lfw:{tmp_path}", "--input-size", "32", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lfw_accuracy"] == pytest.approx(verification.accuracy)


@pytest.mark.parametrize("command", ["layers", "verify"])
def test_help_shows_the_preprocessing_flags(command):
    result = CliRunner().invoke(app, [command, "--help"])
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0 and f"Example: faceprobe {command}" in text
    for flag in ("--input-size", "--crop", "--mean", "--std", "--bgr", "--non-strict", "--weights"):
        assert flag in text
