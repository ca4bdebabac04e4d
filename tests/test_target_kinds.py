"""Targets of any kind in the data: kinds read from a folder CSV, declared in a study, CelebA one-hot groups,
and their stratified draws."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceprobe.data.registry import load_dataset
from faceprobe.data.sampling import balanced_draws, sample_protocol
from faceprobe.errors import DataError, FaceprobeError
from faceprobe.run.config import parse_config
from faceprobe.targets import kind_of, with_targets


def _folder(root: Path, columns: dict[str, list[str]]) -> Path:
    n = len(next(iter(columns.values())))
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(root / "images" / f"{i}.png")
    frame = pd.DataFrame({"file": [f"images/{i}.png" for i in range(n)], **columns})
    frame.to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_folder_columns_get_their_kind_from_their_values(tmp_path: Path) -> None:
    n = 60
    labels = _folder(
        tmp_path,
        {
            "Smiling": ["1", "-1"] * (n // 2),
            "hair": ["black", "blond", "brown", "gray"] * (n // 4),
            "pose_bin": [str(i % 3) for i in range(n)],
            "age": [str(20 + i) for i in range(n)],
            "yaw": [f"{-30 + i * 0.9:.2f}" for i in range(n)],
            "sex": ["f", "m"] * (n // 2),
            "skin": [""] + [f"{0.1 * i:.1f}" for i in range(1, n)],
        },
    )
    attributes = load_dataset(f"folder:{labels}").attributes
    kinds = {name: kind_of(attributes[name]) for name in attributes}
    assert kinds == {
        "Smiling": "binary",
        "hair": "multiclass",
        "pose_bin": "multiclass",
        "age": "continuous",
        "yaw": "continuous",
        "sex": "binary",
        "skin": "continuous",
    }
    assert list(attributes["hair"].cat.categories) == ["black", "blond", "brown", "gray"]
    assert list(attributes["pose_bin"].cat.categories) == ["0", "1", "2"]
    assert attributes["sex"].tolist()[:2] == [0, 1] and attributes["Smiling"].dtype == np.int8
    assert np.isnan(attributes["skin"].iloc[0]) and attributes["age"].iloc[5] == 25.0


@pytest.mark.parametrize(
    ("column", "fragments"),
    [
        (
            [f"person {i}" for i in range(30)],
            ["labels.csv: column note fits no kind of target", "30 different"],
        ),
        (
            [str(i) for i in range(29)] + ["n/a"],
            ["labels.csv:31: note is 'n/a', but its other values are numbers"],
        ),
        (["1"] * 29 + ["yes"], ["labels.csv:31: note is 'yes', but must be -1/1, 0/1 or true/false"]),
    ],
)
def test_a_column_that_fits_no_kind_is_one_line_naming_it(tmp_path: Path, column, fragments) -> None:
    labels = _folder(tmp_path, {"note": column})
    with pytest.raises(DataError) as error:
        load_dataset(f"folder:{labels}")
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_declared_kinds_and_one_hot_groups(tmp_path: Path) -> None:
    n = 40
    labels = _folder(
        tmp_path,
        {
            "level": [str(i % 4) for i in range(n)],
            "Black_Hair": ["1" if i % 4 == 0 else "0" for i in range(n)],
            "Blond_Hair": ["1" if i % 4 == 1 else "0" for i in range(n)],
            "Gray_Hair": ["1" if i % 4 in (2, 3) and i % 8 < 4 else "0" for i in range(n)],
        },
    )
    dataset = with_targets(
        load_dataset(f"folder:{labels}"),
        {"level": "continuous"},
        {"Hair": ["Black_Hair", "Blond_Hair", "Gray_Hair"]},
    )
    assert kind_of(dataset.attributes["level"]) == "continuous"
    hair = dataset.attributes["Hair"]
    assert kind_of(hair) == "multiclass" and list(hair.cat.categories) == [
        "Black_Hair",
        "Blond_Hair",
        "Gray_Hair",
    ]
    assert hair.iloc[0] == "Black_Hair" and hair.iloc[1] == "Blond_Hair" and pd.isna(hair.iloc[6])
    back = with_targets(dataset, {"level": "multiclass"})
    assert list(back.attributes["level"].cat.categories) == ["0", "1", "2", "3"]
    with pytest.raises(
        FaceprobeError, match=re.escape("data.kinds: level has 4 values, so it cannot be binary")
    ):
        with_targets(dataset, {"level": "binary"})
    with pytest.raises(FaceprobeError, match=r"data\.groups: X names Red_Hair.*no column 'nope'"):
        with_targets(dataset, {"nope": "binary"}, {"X": ["Black_Hair", "Red_Hair"]})


def test_study_files_declare_kinds_and_groups() -> None:
    raw = {
        "data": {
            "spec": "celeba:/data",
            "kinds": {"age": "continuous"},
            "groups": {"Hair": ["Black_Hair", "Blond_Hair"]},
        },
        "models": [{"architecture": "small"}],
    }
    config = parse_config(raw)
    assert config.data.kinds == (("age", "continuous"),)
    assert config.data.groups == (("Hair", ("Black_Hair", "Blond_Hair")),)
    raw["data"]["kinds"] = {"age": "ordinal"}
    raw["data"]["groups"] = {"Hair": ["Black_Hair"]}
    with pytest.raises(FaceprobeError) as error:
        parse_config(raw)
    assert "data.kinds: age = 'ordinal'; a kind is binary, multiclass, continuous" in str(error.value)
    assert "data.groups: Hair need two or more distinct columns" in str(error.value)


def test_stratified_draws_keep_class_shares_and_value_quantiles() -> None:
    rng = np.random.default_rng(0)
    ids = [f"{i:05d}.jpg" for i in range(4000)]
    classes = rng.choice(["a", "b", "c"], size=len(ids), p=[0.6, 0.3, 0.1])
    value = rng.exponential(10.0, size=len(ids))
    labels = pd.DataFrame(
        {
            "Smiling": rng.integers(0, 2, size=len(ids)).astype(np.int8),
            "hair": pd.Categorical(classes),
            "age": value,
        },
        index=ids,
    )
    labels.loc[ids[:100], "age"] = np.nan  # unlabelled images are never drawn
    draws = balanced_draws(labels, 400, 600, seed=1)
    binary_alone = balanced_draws(labels[["Smiling"]], 400, 600, seed=1)
    assert draws["Smiling"] == binary_alone["Smiling"]  # a binary draw is what it always was
    hair = draws["hair"]
    assert (len(hair.train), len(hair.val)) == (400, 600) and not hair.shortened
    shares = pd.Series(labels.loc[list(hair.val), "hair"]).value_counts(normalize=True)
    assert abs(shares["a"] - 0.6) < 0.03 and abs(shares["c"] - 0.1) < 0.03
    age = draws["age"]
    drawn = labels.loc[list(age.train + age.val), "age"]
    assert drawn.notna().all() and not set(age.train) & set(age.val)
    pool = labels["age"].dropna()
    for q in (0.1, 0.5, 0.9):
        assert abs(drawn.quantile(q) - pool.quantile(q)) < 0.1 * pool.quantile(0.9)
    few = balanced_draws(labels.iloc[:150][["age"]], 400, 600, seed=1)["age"]
    assert few.shortened and (len(few.train), len(few.val)) == (20, 30)


def test_sample_protocol_keeps_the_test_split_for_every_kind(tmp_path: Path) -> None:
    n = 80
    labels = _folder(
        tmp_path,
        {
            "age": [str(10 + i) for i in range(n)],
            "hair": ["black", "blond", "brown", "gray"] * (n // 4),
            "split": ["train"] * 60 + ["test"] * 20,
        },
    )
    protocol = sample_protocol(load_dataset(f"folder:{labels}"), "all", n_train=20, n_val=20)
    test = set(protocol.test_ids)
    assert len(test) == 20
    for draw in protocol.draws.values():
        assert not (set(draw.train) | set(draw.val)) & test
        assert (len(draw.train), len(draw.val)) == (20, 20)
