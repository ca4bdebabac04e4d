"""Planted targets beyond binary ones in the synthetic faces: written as targets.csv, read as a folder:
dataset of their kinds, and recovered by the probes of their kinds (a random control is not)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import run_cli, tiny_study
from faceprobe import MulticlassProbe, RegressionProbe
from faceprobe.data import SYNTH_ATTRIBUTES, generate, load_celeba
from faceprobe.data.registry import load_dataset
from faceprobe.data.sampling import attribute_labels
from faceprobe.data.synth import TARGETS, identity_traits, image_params, render_face, target_names
from faceprobe.errors import DataError
from faceprobe.run import read_table
from faceprobe.targets import kind_of


def _generate(folder: Path, size: int, yaw_and_age: bool = False) -> Path:
    return generate(
        folder, identities=80, images_per_identity=4, size=size, workers=1, yaw_and_age=yaw_and_age
    )


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("targets"), 32)


@pytest.fixture(scope="module")
def turned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The faces of ``faces`` drawn with a yaw and an age (and at another size)."""
    return _generate(tmp_path_factory.mktemp("turned"), 48, yaw_and_age=True)


def test_targets_csv_is_a_folder_dataset_of_every_kind(faces: Path) -> None:
    dataset = load_dataset(f"folder:{faces}/targets.csv")
    assert (
        list(dataset.attributes.columns)
        == list(target_names())
        == [t for t in TARGETS if t not in ("Yaw", "Age")]
    )
    kinds = {name: kind_of(dataset.attributes[name]) for name in target_names()}
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


def test_yaw_and_age_add_two_targets_and_change_no_label(faces: Path, turned: Path) -> None:
    """Yaw and age draw from streams of their own: every binary label, identity, partition and other target
    is the one drawn without them, and Young is what the age says."""
    for name in ("list_attr_celeba.txt", "identity_CelebA.txt", "list_eval_partition.txt"):
        assert (turned / name).read_bytes() == (faces / name).read_bytes(), name
    plain = load_dataset(f"folder:{faces}/targets.csv").attributes
    drawn = load_dataset(f"folder:{turned}/targets.csv").attributes
    assert list(drawn.columns) == list(TARGETS) == list(target_names(yaw_and_age=True))
    pd.testing.assert_frame_equal(drawn[plain.columns], plain)
    assert kind_of(drawn["Yaw"]) == kind_of(drawn["Age"]) == "continuous"
    assert drawn["Yaw"].between(-35, 35).all() and drawn["Yaw"].std() > 15  # per image
    identity = load_celeba(turned).identities.to_numpy()
    assert (drawn["Age"].groupby(identity).nunique() == 1).all()  # per identity
    young = load_celeba(turned).attributes["Young"].to_numpy() == 1
    assert (drawn["Age"][young] <= 40).all() and (drawn["Age"][~young] >= 45).all()
    assert drawn["Age"].min() < 30 and drawn["Age"].max() > 70


def _darkness(image: Image.Image, rows: slice, columns: slice) -> np.ndarray:
    return 255 - np.asarray(image.convert("L"), dtype=float)[rows, columns]


def test_a_yaw_turns_the_inner_features_toward_its_side() -> None:
    """The dark inner features (eyes, brows, nose, mouth) move right with a positive yaw, left with a
    negative one, and further the larger the turn; a face's outline foreshortens on the turned side."""
    traits = identity_traits(0, 4, aged=True)
    still = dict(angle=0.0, shift=(0.0, 0.0), scale=1.0, light_strength=0.0, blurry=False, eyeglasses=False)
    params = replace(image_params(0, 4, 0, traits, turned=True), hat=False, **still)

    def centre(yaw: float) -> float:  # the darkness-weighted column of the eye-to-mouth band, in pixels
        dark = _darkness(render_face(traits, replace(params, yaw=yaw)), slice(40, 85), slice(30, 82))
        dark = np.clip(dark - np.median(dark), 0, None)  # the skin's level is 0: only the features count
        return float((dark.sum(axis=0) * np.arange(30, 82)).sum() / dark.sum())

    centres = [centre(yaw) for yaw in (-35, -15, 0, 15, 35)]
    assert np.all(np.diff(centres) > 0.5), centres
    assert centres[-1] - centres[2] > 3 and centres[2] - centres[0] > 3, centres
    assert render_face(traits, replace(params, yaw=0.0)) != render_face(traits, params)


def test_age_lines_the_face_and_greys_the_hair() -> None:
    """The older the face, the darker its forehead (more and darker lines), and the greyer its hair."""
    traits = replace(identity_traits(0, 4, aged=True), bangs=False, bald=False)
    params = replace(image_params(0, 4, 0, traits), angle=0.0, shift=(0.0, 0.0), scale=1.0, hat=False)
    params = replace(params, blurry=False, light_strength=0.0)

    def forehead(age: float) -> float:
        image = render_face(replace(traits, age=age), params)
        return float(_darkness(image, slice(28, 38), slice(46, 66)).mean())

    darkness = [forehead(age) for age in (22, 40, 55, 70, 80)]
    assert np.all(np.diff(darkness) >= 0) and darkness[-1] - darkness[0] > 3, darkness
    gray = np.array([172, 170, 166])
    pairs = [(identity_traits(0, i), identity_traits(0, i, aged=True)) for i in range(60)]
    pairs = [(plain, aged) for plain, aged in pairs if aged.hair_color_name != "gray"]
    closer = [
        np.abs(np.subtract(plain.hair, gray)).sum() - np.abs(np.subtract(aged.hair, gray)).sum()
        for plain, aged in pairs
    ]
    ages = [aged.age for _, aged in pairs]
    assert min(closer) >= -3 and max(closer) > 30 and np.corrcoef(ages, closer)[0, 1] > 0.7, closer


def test_a_synthetic_dataset_probes_its_targets_by_name_and_all_stays_binary(turned: Path) -> None:
    dataset = load_dataset(f"synthetic:{turned}")
    assert dataset.attribute_names == list(SYNTH_ATTRIBUTES)  # what "all" and the baseline read
    assert attribute_labels(dataset, "all").columns.tolist() == list(SYNTH_ATTRIBUTES)
    labels = attribute_labels(dataset, ["Yaw", "Smiling", "Hair_Color"])
    table = load_dataset(f"folder:{turned}/targets.csv").attributes
    table.index = table.index.str.removeprefix("img_align_celeba/")
    assert labels.index.equals(table.index)
    np.testing.assert_array_equal(labels["Yaw"].to_numpy(), table["Yaw"].to_numpy())
    assert kind_of(labels["Hair_Color"]) == "multiclass" and kind_of(labels["Smiling"]) == "binary"
    assert (labels["Hair_Color"] == table["Hair_Color"]).sum() == table["Hair_Color"].notna().sum()
    with pytest.raises(DataError, match="did you mean Yaw"):
        attribute_labels(dataset, ["Yawn"])
