"""Every dataset layout read through ``KIND:PATH``; every bad input reported as one line naming the fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from faceprobe.cli import app
from faceprobe.data import (
    FaceImages,
    eval_transform,
    generate,
    lfw_verification_accuracy,
    load_dataset,
    load_lfw_pairs,
    parse_data_spec,
)
from faceprobe.data.registry import DataSpec
from faceprobe.errors import DataError


def _image(path: Path, size: tuple[int, int] = (20, 24), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _one_line(error: pytest.ExceptionInfo, pattern: str) -> None:
    assert "\n" not in str(error.value)
    assert re.search(pattern, str(error.value)), str(error.value)


# --- CelebA, its CSV variants, and synthetic faces --------------------------------------------------------

CELEBA_IDS = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"]


def _celeba(root: Path, csv: bool = False, zero_one: bool = False, nested: bool = False) -> Path:
    image_dir = root / "img_align_celeba" / ("img_align_celeba" if nested else "")
    for i, name in enumerate(CELEBA_IDS):
        _image(image_dir / name, seed=i)
    neg = "0" if zero_one else "-1"
    rows = [[neg, "1"], ["1", neg], [neg, neg], ["1", "1"]]
    if csv:
        lines = [
            "image_id,Smiling,Male",
            *(f"{n},{a},{b}" for n, (a, b) in zip(CELEBA_IDS, rows, strict=True)),
        ]
        (root / "list_attr_celeba.csv").write_text("\n".join(lines) + "\n")
        lines = ["image_id,partition", *(f"{n},{p}" for n, p in zip(CELEBA_IDS, "0012", strict=True))]
        (root / "list_eval_partition.csv").write_text("\n".join(lines) + "\n")
    else:
        body = "".join(f"{n} {a} {b}\n" for n, (a, b) in zip(CELEBA_IDS, rows, strict=True))
        (root / "list_attr_celeba.txt").write_text(f"4\nSmiling Male\n{body}")
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{n} {p}\n" for n, p in zip(CELEBA_IDS, "0012", strict=True))
        )
        (root / "identity_CelebA.txt").write_text(
            "".join(f"{n} {i}\n" for n, i in zip(CELEBA_IDS, "7788", strict=True))
        )
    return root


@pytest.mark.parametrize(
    "variant", [{}, {"csv": True}, {"csv": True, "zero_one": True}, {"csv": True, "nested": True}]
)
def test_celeba_layouts(tmp_path: Path, variant: dict) -> None:
    ds = load_dataset(f"celeba:{_celeba(tmp_path, **variant)}")
    assert ds.kind == "celeba" and list(ds.ids) == CELEBA_IDS
    assert ds.attributes is not None and ds.attributes.dtypes.eq(np.int8).all()
    assert ds.attributes.to_numpy().tolist() == [[0, 1], [1, 0], [0, 0], [1, 1]]
    assert ds.partitions is not None and ds.partitions.tolist() == [0, 0, 1, 2]
    assert (ds.identities is None) == ("csv" in variant)  # Kaggle's CSV edition has no identity file
    assert ds.open_image("000002.jpg").size == (20, 24)


def test_synthetic_faces_load_as_celeba_layout(tmp_path: Path) -> None:
    generate(tmp_path, identities=3, images_per_identity=2, size=32, workers=1)
    ds = load_dataset(f"synthetic:{tmp_path}")
    assert ds.kind == "synthetic" and len(ds.ids) == 6 and ds.identities is not None
    assert "Control_Random" in ds.attribute_names


def test_celeba_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    root = _celeba(tmp_path, csv=True)
    attributes = root / "list_attr_celeba.csv"
    attributes.write_text("image_id,Smiling,Male\n000001.jpg,1,-1\n000002.jpg,2,1\n")
    with pytest.raises(DataError) as error:
        load_dataset(f"celeba:{root}")
    _one_line(error, rf"^{re.escape(str(attributes))}:3: Smiling is '2', but must be -1/1, 0/1 or true/false")
    attributes.write_text("image_id,Smiling,Male\n000001.jpg,1,-1\n000002.jpg,1\n")
    with pytest.raises(DataError) as error:
        load_dataset(f"celeba:{root}")
    _one_line(error, rf"^{re.escape(str(attributes))}:3: expected 3 fields like the header, found 2")
    attributes.write_text("image_id,Smiling,Male\n000001.jpg,1,-1\n000002.jpg,1,1\n")
    (root / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,0\n000002.jpg,val\n")
    with pytest.raises(DataError) as error:
        load_dataset(f"celeba:{root}")
    _one_line(error, r"list_eval_partition.csv:3: partition is 'val', but must be 0, 1 or 2")


# --- VGGFace2 ---------------------------------------------------------------------------------------------


def _vggface2(root: Path, boxes: str | None = None) -> Path:
    for split, person in (("train", "n000002"), ("train", "n000010"), ("test", "n000001")):
        for k in (1, 2):
            _image(root / split / person / f"000{k}_01.jpg", size=(60, 80), seed=k)
    if boxes is not None:
        (root / "bb_landmark").mkdir()
        (root / "bb_landmark" / "loose_bb_train.csv").write_text(boxes)
    return root


def test_vggface2_identities_partitions_and_loose_crops(tmp_path: Path) -> None:
    boxes = 'NAME_ID,X,Y,W,H\n"n000002/0001_01",10,5,30,40\n"n000010/0002_01",-4,50,20,40\n'
    ds = load_dataset(f"vggface2:{_vggface2(tmp_path, boxes)}")
    assert ds.kind == "vggface2" and len(ds.ids) == 6 and ds.attributes is None
    assert ds.ids[0] == "train/n000002/0001_01.jpg"
    assert ds.identities is not None and ds.identities.nunique() == 3
    assert ds.partitions is not None and ds.partitions.value_counts().to_dict() == {0: 4, 2: 2}
    assert ds.boxes is not None and ds.boxes.loc["train/n000002/0001_01.jpg"].tolist() == [10, 5, 30, 40]
    full = ds.open_image("train/n000002/0001_01.jpg")
    assert full.size == (30, 40)
    assert np.array_equal(
        np.asarray(full), np.asarray(Image.open(ds.image_path(ds.ids[0])).convert("RGB"))[5:45, 10:40]
    )
    assert ds.open_image("train/n000010/0002_01.jpg").size == (16, 30)  # clipped at the image's border
    assert ds.open_image("test/n000001/0001_01.jpg").size == (60, 80)  # no box: the whole image
    images = FaceImages(list(ds.ids), transform=eval_transform(32), opener=ds.open_image)
    assert images[0][0].shape == (3, 32, 32)


def test_vggface2_bad_boxes_and_layout(tmp_path: Path) -> None:
    boxes = "NAME_ID,X,Y,W,H\nn000002/0001_01,10,5,30,40\nn000002/0002_01,10,5,zero,40\n"
    root = _vggface2(tmp_path / "a", boxes)
    with pytest.raises(DataError) as error:
        load_dataset(f"vggface2:{root}")
    _one_line(error, r"loose_bb_train.csv:3: the box 10,5,zero,40 is not four numbers")
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError) as error:
        load_dataset(f"vggface2:{tmp_path / 'b'}")
    _one_line(error, r"no train/ or test/ folder")


# --- LFW ---------------------------------------------------------------------------------------------------


def _lfw(root: Path, pairs: str | None = None, folder: str = "lfw") -> Path:
    for name, count in (("Ann_A", 2), ("Bob_B", 3), ("Cy_C", 1)):
        for k in range(1, count + 1):
            _image(root / folder / name / f"{name}_{k:04d}.jpg", seed=k)
    default = "2 1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\nBob_B 1 2\nBob_B 2 Cy_C 1\n"
    (root / "pairs.txt").write_text(default if pairs is None else pairs)
    return root


@pytest.mark.parametrize("folder", ["lfw", "lfw-deepfunneled"])
def test_lfw_images_and_pairs(tmp_path: Path, folder: str) -> None:
    root = _lfw(tmp_path, folder=folder)
    ds = load_dataset(f"lfw:{root}")
    assert ds.kind == "lfw" and len(ds.ids) == 6 and ds.partitions is None
    assert ds.identities is not None and ds.identities.nunique() == 3
    folds = load_lfw_pairs(root)
    assert len(folds) == 2 and all(len(fold) == 2 for fold in folds)
    assert folds[0][0] == ("Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", True)
    assert folds[1][1] == ("Bob_B/Bob_B_0002.jpg", "Cy_C/Cy_C_0001.jpg", False)
    assert all(ds.image_path(pair.first).is_file() for fold in folds for pair in fold)


@pytest.mark.parametrize(
    ("pairs", "pattern"),
    [
        ("10 300\nAnn_A 1 2\n", r"pairs.txt: 1 pairs, but line 1 announces 10 folds of 600"),
        ("two\n", r"pairs.txt:1: expected the number of folds and of pairs per class"),
        (
            "2 1\nAnn_A 1 2\nAnn_A 1 Bob_B\nBob_B 1 2\nBob_B 2 Cy_C 1\n",
            r"pairs.txt:3: expected a different-person",
        ),
        (
            "2 1\nAnn_A 1 2\nAnn_A 1 Bob_B 3\nBob_B 1 9\nBob_B 2 Cy_C 1\n",
            r"pairs.txt:4: .*Bob_B_0009.jpg not found",
        ),
    ],
)
def test_lfw_bad_pairs_name_the_line(tmp_path: Path, pairs: str, pattern: str) -> None:
    with pytest.raises(DataError) as error:
        load_lfw_pairs(_lfw(tmp_path, pairs))
    _one_line(error, pattern)


def test_verification_threshold_is_chosen_on_the_other_folds() -> None:
    rng = np.random.default_rng(0)
    same = np.tile(np.repeat([True, False], 300), 10)
    folds = np.repeat(np.arange(10), 600)
    similarities = np.where(same, 0.6, 0.2) + rng.normal(0, 0.1, same.size)
    result = lfw_verification_accuracy(similarities, same, folds)
    assert 0.95 < result.accuracy < 1 and len(result.fold_accuracies) == 10
    assert all(0.3 < t < 0.5 for t in result.thresholds)
    # Perfectly separable on nine folds but inverted on the tenth: the tenth cannot pick its own threshold.
    similarities = np.where(same, 1.0, 0.0)
    similarities[folds == 9] = 1 - similarities[folds == 9]
    result = lfw_verification_accuracy(similarities, same, folds)
    assert result.fold_accuracies[9] == 0 and result.fold_accuracies[0] == 1
    with pytest.raises(ValueError, match="two folds"):
        lfw_verification_accuracy(similarities, same, np.zeros_like(folds))


# --- generic folder + table ---------------------------------------------------------------------------------


def _folder(root: Path, table: str, name: str = "labels.csv") -> tuple[Path, Path]:
    for i, image in enumerate(["a.jpg", "sub/b.jpg", "c.jpg"]):
        _image(root / "images" / image, seed=i)
    (root / name).write_text(table)
    return root / "images", root / name


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("labels.csv", "file,Smiling,Glasses\na.jpg,-1,1\nsub/b.jpg,1,-1\nc.jpg,-1,-1\n"),
        ("labels.tsv", "image_id\tSmiling\tGlasses\na.jpg\t0\t1\nsub/b.jpg\t1\t0\nc.jpg\t0\t0\n"),
        (
            "labels.csv",
            "Smiling,filename,Glasses\nFalse,a.jpg,TRUE\ntrue,sub/b.jpg,false\nfalse,c.jpg,false\n",
        ),
    ],
)
def test_folder_with_label_table(tmp_path: Path, name: str, table: str) -> None:
    images, labels = _folder(tmp_path, table, name)
    ds = load_dataset(f"folder:{images},{labels}")
    assert ds.kind == "folder" and list(ds.ids) == ["a.jpg", "sub/b.jpg", "c.jpg"]
    assert ds.attributes is not None and ds.attribute_names == ["Smiling", "Glasses"]
    assert ds.attributes.to_numpy().tolist() == [[0, 1], [1, 0], [0, 0]]
    assert ds.identities is None and ds.partitions is None
    assert ds.open_image("sub/b.jpg").size == (20, 24)


def test_folder_identity_and_partition_columns_and_lone_table(tmp_path: Path) -> None:
    table = (
        "path,Smiling,identity,split\n"
        "images/a.jpg,1,ann,train\nimages/sub/b.jpg,0,bob,val\nimages/c.jpg,0,ann,test\n"
    )
    _, labels = _folder(tmp_path, table)
    assert parse_data_spec(f"folder:{labels}") == DataSpec("folder", tmp_path, labels)
    ds = load_dataset(f"folder:{labels}")
    assert ds.attribute_names == ["Smiling"]
    assert ds.identities is not None and ds.identities.tolist() == [0, 1, 0]
    assert ds.partitions is not None and ds.partitions.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("table", "pattern"),
    [
        (
            "file,Smiling\na.jpg,1\nsub/b.jpg,yes\n",
            r"labels.csv:3: Smiling is 'yes', but must be -1/1, 0/1 or true/false",
        ),
        (
            "file,Smiling\na.jpg,1\nsub/b.jpg,0\nc.jpg,-1\n",
            r"labels.csv:4: Smiling is '-1', but earlier rows spell it 0/1",
        ),
        ("file,Smiling\na.jpg,1\n\nsub/b.jpg,0\na.jpg,0\n", r"labels.csv:5: image a.jpg is listed twice"),
        ("file,Smiling\na.jpg,1,1\n", r"labels.csv:2: expected 2 fields like the header, found 3"),
        (
            "file,Smiling\na.jpg,1\nd.jpg,0\n",
            r"images/d.jpg: image not found; restore the file, or pass --skip-bad-images",
        ),
        ("file\na.jpg\n", r"labels.csv:1: no attribute columns"),
        ("file,split,Smiling\na.jpg,holdout,1\n", r"labels.csv:2: partition is 'holdout'"),
    ],
)
def test_folder_bad_tables_name_file_and_line(tmp_path: Path, table: str, pattern: str) -> None:
    images, labels = _folder(tmp_path, table)
    with pytest.raises(DataError) as error:
        load_dataset(f"folder:{images},{labels}")
    _one_line(error, pattern)


# --- specs, missing and corrupt images -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("/data/celeba", r"write KIND:PATH"),
        ("celeb:/data/celeba", r"unknown kind 'celeb'; did you mean celeba\?"),
        ("celeba:/no/such/folder", r"/no/such/folder not found"),
    ],
)
def test_bad_specs(spec: str, pattern: str) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(spec)
    _one_line(error, pattern)


def test_missing_images_raise_or_are_skipped_and_recorded(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    (root / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataError) as error:
        load_dataset(f"celeba:{root}")
    _one_line(error, rf"^{re.escape(str(root / 'img_align_celeba' / '000003.jpg'))}: image not found")
    ds = load_dataset(f"celeba:{root}", skip_bad_images=True)
    assert (
        "000003.jpg" not in ds.ids and ds.attributes is not None and "000003.jpg" not in ds.attributes.index
    )
    assert ds.skipped == (("000003.jpg", "missing"),)


def test_scan_finds_truncated_and_corrupt_images(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    _truncate(root / "img_align_celeba" / "000002.jpg")
    (root / "img_align_celeba" / "000004.jpg").write_text("not a jpeg")
    ds = load_dataset(f"celeba:{root}")
    assert ds.scan(["000001.jpg", "000003.jpg"]).skipped == ()
    with pytest.raises(DataError) as error:
        ds.scan()
    path = re.escape(str(ds.image_path("000002.jpg")))
    _one_line(error, rf"^{path}: cannot decode.*(?i:truncated).*and 1 more bad images\)")
    skipping = load_dataset(f"celeba:{root}", skip_bad_images=True).scan(workers=2)
    assert [bad.image_id for bad in skipping.skipped] == ["000002.jpg", "000004.jpg"]
    assert all("cannot decode" in bad.reason for bad in skipping.skipped)
    assert list(skipping.ids) == ["000001.jpg", "000003.jpg"]
    assert skipping.partitions is not None and list(skipping.partitions.index) == list(skipping.ids)


def test_face_images_use_the_dataset_opener_and_the_runner_transform(tmp_path: Path) -> None:
    ds = load_dataset(f"celeba:{_celeba(tmp_path)}")
    images = ds.torch_dataset(targets=np.array([0, 1, 0, 1]), transform=eval_transform(16))
    batch, targets = next(iter(torch.utils.data.DataLoader(images, batch_size=4)))
    assert batch.shape == (4, 3, 16, 16) and targets.tolist() == [0, 1, 0, 1]


def test_cli_data_check_lists_bad_images(tmp_path: Path) -> None:
    root = _celeba(tmp_path)
    _truncate(root / "img_align_celeba" / "000002.jpg")
    result = CliRunner().invoke(app, ["data", "check", f"celeba:{root}", "--attributes", "Smiling"])
    assert result.exit_code == 1, result.output
    assert "celeba dataset" in result.output and "3 usable images" in result.output
    assert "1 bad images" in result.output and "000002.jpg: cannot decode" in result.output
    assert "Smiling" in result.output and "Male" not in result.output
    result = CliRunner().invoke(app, ["data", "check", f"celeba:{root}", "--attributes", "Smilng"])
    assert isinstance(result.exception, DataError) and "did you mean Smiling" in str(result.exception)
