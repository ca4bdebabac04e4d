"""The thesis's sampling protocol on a FaceDataset: balanced, disjoint, seeded draws; test split untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from faceprobe.data import FaceDataset, FaceImages, load_dataset, sample_protocol
from faceprobe.errors import DataError, FaceprobeError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-sample"


def _dataset(
    n: int = 1200, seed: int = 0, partitions: bool = True, root: Path = Path("/nowhere")
) -> FaceDataset:
    """Labels only (no image files): CelebA-like partitions and attributes of every frequency."""
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"{i:06d}.jpg" for i in range(1, n + 1)], name="image")
    attributes = pd.DataFrame(
        {"Common": rng.random(n) < 0.5, "Rare": rng.random(n) < 0.04, "Mostly": rng.random(n) < 0.9},
        index=ids,
    ).astype(np.int8)
    split = pd.Series(rng.choice([0, 1, 2], n, p=[0.7, 0.15, 0.15]).astype(np.int8), index=ids)
    return FaceDataset(
        "celeba", root, root, ids, attributes=attributes, partitions=split if partitions else None
    )


def _check(protocol, dataset: FaceDataset) -> None:
    """Balanced, disjoint train/val per attribute; drawn from partitions 0 and 1 only; test ids from 2."""
    labels = dataset.attributes
    assert labels is not None
    partitions = dataset.partitions if dataset.partitions is not None else pd.Series(0, index=labels.index)
    for attribute, draw in protocol.draws.items():
        assert not set(draw.train) & set(draw.val), attribute
        assert len(set(draw.train)) == len(draw.train) and len(set(draw.val)) == len(draw.val)
        for part in (draw.train, draw.val):
            assert 2 * labels.loc[list(part), attribute].sum() == len(part), attribute
            assert partitions.loc[list(part)].isin([0, 1]).all(), attribute
        assert not set(protocol.test_ids) & (set(draw.train) | set(draw.val)), attribute
    assert (partitions.loc[list(protocol.test_ids)] == 2).all()


def test_draws_are_balanced_disjoint_from_the_pool_and_spare_the_test_split() -> None:
    dataset = _dataset()
    protocol = sample_protocol(dataset, "all", n_train=64, n_val=192, scan=False)
    _check(protocol, dataset)
    assert protocol.attributes == ("Common", "Rare", "Mostly")
    assert (len(protocol.draws["Common"].train), len(protocol.draws["Common"].val)) == (64, 192)
    assert protocol.test_ids == tuple(sorted(dataset.ids[dataset.partitions == 2]))  # None: every test image


def test_draws_are_reproducible_by_seed_and_independent_of_other_attributes() -> None:
    dataset = _dataset()
    first = sample_protocol(dataset, ["Common", "Rare"], n_train=64, n_val=192, n_test=20, seed=5, scan=False)
    again = sample_protocol(dataset, ["Common", "Rare"], n_train=64, n_val=192, n_test=20, seed=5, scan=False)
    other = sample_protocol(dataset, ["Common", "Rare"], n_train=64, n_val=192, n_test=20, seed=6, scan=False)
    alone = sample_protocol(dataset, ["Rare"], n_train=64, n_val=192, n_test=20, seed=5, scan=False)
    assert first == again
    assert first.draws["Common"].train != other.draws["Common"].train and first.test_ids != other.test_ids
    assert alone.draws["Rare"] == first.draws["Rare"]
    assert len(first.test_ids) == 20 and first.test_ids == tuple(sorted(first.test_ids))
    _check(first, dataset)


def test_short_attributes_get_the_largest_balanced_draw_and_are_recorded() -> None:
    dataset = _dataset()
    protocol = sample_protocol(dataset, "all", n_train=100, n_val=300, scan=False)
    assert set(protocol.shortened) == {"Rare", "Mostly"}
    pool = dataset.attributes.loc[dataset.partitions.isin([0, 1])]
    train, val = protocol.shortened["Rare"]
    assert train + val == 2 * int(pool["Rare"].sum())
    assert abs(train / (train + val) - 0.25) < 0.05
    _check(protocol, dataset)


def test_without_partitions_the_whole_set_is_the_pool() -> None:
    dataset = _dataset(partitions=False)
    protocol = sample_protocol(dataset, ["Common"], n_train=300, n_val=300, scan=False)
    assert protocol.test_ids == ()
    assert len(protocol.draws["Common"].train) == 300
    _check(protocol, dataset)


def test_union_and_frame_hold_each_image_once_and_extraction_reads_each_once() -> None:
    dataset = _dataset()
    protocol = sample_protocol(dataset, "all", n_train=64, n_val=192, n_test=50, scan=False)
    union = protocol.union()
    used = set(protocol.test_ids).union(*(set(d.train) | set(d.val) for d in protocol.draws.values()))
    assert union == sorted(used) and len(union) == len(set(union))
    # Extracting the union opens every image exactly once, however many attributes share it.
    opened: list[str] = []

    def opener(image_id: str) -> Image.Image:
        opened.append(image_id)
        return Image.new("RGB", (1, 1))

    images = FaceImages(union, transform=lambda image: image, opener=opener)
    for index in range(len(images)):
        images[index]
    assert sorted(opened) == union
    frame = protocol.to_frame()
    assert list(frame.columns) == ["attribute", "split", "image_id"]
    assert list(frame["split"].cat.categories) == ["train", "val", "test"]
    test_rows = frame[frame["split"] == "test"]
    assert test_rows["attribute"].isna().all() and tuple(test_rows["image_id"]) == protocol.test_ids
    for attribute, draw in protocol.draws.items():
        rows = frame[frame["attribute"] == attribute]
        assert tuple(rows.loc[rows["split"] == "train", "image_id"]) == draw.train
        assert tuple(rows.loc[rows["split"] == "val", "image_id"]) == draw.val
    assert sorted(set(frame["image_id"])) == union


def test_unknown_attributes_and_datasets_without_labels_are_reported() -> None:
    dataset = _dataset()
    with pytest.raises(DataError, match=r"no attribute 'Comon'; did you mean Common\?") as error:
        sample_protocol(dataset, ["Comon"], scan=False)
    assert "\n" not in str(error.value)
    assert sample_protocol(dataset, "Rare", n_train=8, n_val=8, scan=False).attributes == ("Rare",)
    with pytest.raises(FaceprobeError, match=r"draw sizes must be positive.*n_train 0"):
        sample_protocol(dataset, n_train=0, scan=False)
    unlabelled = FaceDataset("lfw", Path("/lfw"), Path("/lfw"), dataset.ids)
    with pytest.raises(DataError, match=r"a lfw dataset has no attribute labels"):
        sample_protocol(unlabelled, scan=False)


def _celeba_images(root: Path, n: int = 40) -> Path:
    """A CelebA layout of ``n`` tiny images: even ones Smiling; 0-29 train, 30-34 val, 35+ test."""
    (root / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "img_align_celeba" / name)
    rows = "".join(f"{name} {1 if i % 2 == 0 else -1}\n" for i, name in enumerate(names))
    (root / "list_attr_celeba.txt").write_text(f"{n}\nSmiling\n{rows}")
    splits = "".join(f"{name} {0 if i < 30 else 1 if i < 35 else 2}\n" for i, name in enumerate(names))
    (root / "list_eval_partition.txt").write_text(splits)
    return root


def test_bad_images_in_the_draws_raise_or_are_skipped_and_drawn_around(tmp_path: Path) -> None:
    root = _celeba_images(tmp_path)
    corrupt = root / "img_align_celeba" / "000003.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    with pytest.raises(DataError, match=r"000003.jpg: cannot decode the image"):
        sample_protocol(load_dataset(f"celeba:{root}"), n_train=8, n_val=26)
    dataset = load_dataset(f"celeba:{root}", skip_bad_images=True)
    protocol = sample_protocol(dataset, n_train=8, n_val=26, workers=2)
    assert [bad.image_id for bad in protocol.skipped] == ["000003.jpg"]
    assert "000003.jpg" not in protocol.union()
    draw = protocol.draws["Smiling"]
    assert len(draw.train) + len(draw.val) == 34  # 35 pool images, one skipped: 17 of each class remain
    assert protocol.test_ids == tuple(f"{i:06d}.jpg" for i in range(36, 41))


@pytest.fixture(scope="module")
def sample() -> FaceDataset:
    if not SAMPLE.is_dir():
        pytest.skip(f"CelebA sample not found at {SAMPLE}; it lives in ../shared/data beside the repo")
    return load_dataset(f"celeba:{SAMPLE}")


def test_protocol_on_the_real_celeba_sample(sample: FaceDataset) -> None:
    protocol = sample_protocol(sample, ["Smiling", "Male", "Eyeglasses"], n_train=32, n_val=96, seed=0)
    _check(protocol, sample)
    assert protocol.skipped == ()
    assert (len(protocol.draws["Smiling"].train), len(protocol.draws["Smiling"].val)) == (32, 96)
    assert "Eyeglasses" in protocol.shortened  # few of the 269 labelled images wear glasses
    assert set(protocol.union()) <= set(sample.attributes.index)
    assert protocol == sample_protocol(
        sample, ["Smiling", "Male", "Eyeglasses"], n_train=32, n_val=96, seed=0
    )
