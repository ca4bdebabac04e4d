"""Planted targets beyond binary ones in the synthetic faces: written as targets.csv, read as a folder:
dataset of their kinds, and recovered by the probes of their kinds (a random control is not)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_cli, tiny_study
from faceprobe import MulticlassProbe, RegressionProbe
from faceprobe.data import generate, load_celeba
from faceprobe.data.registry import load_dataset
from faceprobe.data.synth import TARGETS, identity_traits, image_params
from faceprobe.run import read_table
from faceprobe.targets import kind_of


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("targets"),
        identities=80,
        images_per_identity=4,
        size=32,
        workers=1,
    )


def test_targets_csv_is_a_folder_dataset_of_every_kind(faces: Path) -> None:
    dataset = load_dataset(f"folder:{faces}/targets.csv")
    kinds = {name: kind_of(dataset.attributes[name]) for name in TARGETS}
    assert kinds == {
        "Head_Roll": "continuous",
        "Lighting": "continuous",
        "Skin_Tone": "continuous",
        "Hair_Color": "multiclass",
        "Random_Value": "continuous",
    }
    assert list(dataset.attributes["Hair_Color"].cat.categories) == [
        "black",
        "blond",
        "brown",
        "gray",
    ]
    celeba = load_celeba(faces)
    assert dataset.ids.str.removeprefix("img_align_celeba/").tolist() == celeba.attributes.index.tolist()
    assert (dataset.partitions.to_numpy() == celeba.partitions.to_numpy()).all()
    # the values are what the generator drew for the image (and so what it rendered)
    params = image_params(0, 3, 2, identity_traits(0, 3))
    assert dataset.attributes["Head_Roll"].iloc[3 * 4 + 2] == pytest.approx(params.angle, abs=1e-4)
    assert dataset.attributes["Lighting"].iloc[3 * 4 + 2] == pytest.approx(params.brightness, abs=1e-5)
    # the hair colour agrees with the one-hot binary columns
    hair = dataset.attributes["Hair_Color"].to_numpy()
    for name in ("Black_Hair", "Gray_Hair"):
        column = celeba.attributes[name].to_numpy() == 1
        assert (hair[column] == name.split("_")[0].lower()).all()


def test_planted_targets_are_recovered_and_the_random_control_is_not(
    faces: Path,
) -> None:
    dataset = load_dataset(f"folder:{faces}/targets.csv")
    X = np.stack(
        [np.asarray(Image.open(dataset.image_path(i)), dtype=np.float32).ravel() for i in dataset.ids]
    )
    partition = dataset.partitions.to_numpy()
    train, held_out = (
        np.flatnonzero(partition == 0),
        np.flatnonzero(partition > 0),
    )  # identity-disjoint

    def r2(name: str, components: int) -> float:
        y = dataset.attributes[name].to_numpy()
        fit, score = train[~np.isnan(y[train])], held_out[~np.isnan(y[held_out])]
        return RegressionProbe(components).fit(X[fit], y[fit]).score(X[score], y[score])

    assert r2("Skin_Tone", 2) >= 0.8  # planted in the pixels, read on new identities
    assert max(r2("Random_Value", k) for k in (2, 4, 8)) <= 0.05  # nothing to read
    codes = dataset.attributes["Hair_Color"].cat.codes.to_numpy()
    fit, score = train[codes[train] >= 0], held_out[codes[held_out] >= 0]
    hair = MulticlassProbe(4).fit(X[fit], codes[fit]).score(X[score], codes[score])
    assert hair > 0.25 + 0.2  # four classes: chance is 0.25 whatever their frequencies


def test_a_small_network_holds_the_planted_targets_through_the_cli(faces: Path, tmp_path: Path) -> None:
    """``folder:DIR/targets.csv`` probed by the study runner: the skin tone is read at some layer of a small
    random network on the untouched test identities, the random control at no layer."""
    attributes = ["Skin_Tone", "Hair_Color", "Random_Value"]
    data = {
        "spec": f"folder:{faces}/targets.csv",
        "attributes": attributes,
        "train": 160,
        "val": 80,
        "test": -1,
    }
    study = tmp_path / "study.toml"
    study.write_text(tiny_study(faces, data=data, run={"batch_size": 64}))
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    results = read_table(tmp_path / "run")
    layer = results[(results["representation"] == "layer") & (results["metric"] != "mae")]
    best = layer.groupby(["split", "attribute"])["accuracy"].max()
    assert best[("test", "Skin_Tone")] >= 0.8 and best[("val", "Skin_Tone")] >= 0.8
    assert best[("test", "Random_Value")] <= 0.05 and best[("val", "Random_Value")] <= 0.05
    assert best[("val", "Hair_Color")] > 0.25 + 0.15  # balanced accuracy; chance 1/4
    assert set(layer.loc[layer["attribute"] == "Hair_Color", "chance"]) == {0.25}


def test_celeba_one_hot_columns_probe_as_one_multiclass_target(faces: Path, tmp_path: Path) -> None:
    members = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
    data = {"spec": f"synthetic:{faces}", "attributes": ["Hair", "Smiling"], "train": 120, "val": 80}
    study = tmp_path / "study.toml"
    study.write_text(tiny_study(faces, data=data) + f"\n[data.groups]\nHair = {json.dumps(members)}\n")
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    results = read_table(tmp_path / "run")
    assert set(results.loc[results["attribute"] == "Hair", "metric"]) == {"balanced_accuracy"}
    assert set(results.loc[results["attribute"] == "Smiling", "metric"]) == {"accuracy"}
    labels = pd.read_parquet(tmp_path / "run" / "labels.parquet")
    assert list(labels["Hair"].cat.categories) == members
