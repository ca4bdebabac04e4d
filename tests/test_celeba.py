"""The CelebA-layout loader, on the real sample and on files with CelebA's quirks and with mistakes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprobe.data import FaceImages, load_celeba
from faceprobe.data.celeba import ATTRIBUTE_FILE, IDENTITY_FILE, IMAGE_DIR, PARTITION_FILE
from faceprobe.errors import DataError

SAMPLE = Path(__file__).parents[2] / "shared" / "data" / "celeba-sample"


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_dir():
        pytest.skip(f"CelebA sample not found at {SAMPLE}; it lives in ../shared beside the repo")
    return load_celeba(SAMPLE)


def test_reads_the_real_sample(sample) -> None:
    assert len(sample.identities) == 3000
    assert sample.identities.nunique() == 100
    assert sample.attributes.shape == (269, 40)
    assert sample.attribute_names[0] == "5_o_Clock_Shadow" and sample.attribute_names[-1] == "Young"
    assert all(dtype == np.int8 for dtype in sample.attributes.dtypes)
    assert set(np.unique(sample.attributes.to_numpy())) == {0, 1}
    assert set(sample.partitions) <= {0, 1, 2}
    assert sample.partitions.index.equals(sample.identities.index)
    assert sample.attributes.index.isin(sample.identities.index).all()
    with Image.open(sample.image_path(sample.attributes.index[0])) as image:
        assert image.size == (178, 218)


def test_sample_labels_match_the_published_file(sample) -> None:
    # The published row of 000002.jpg starts -1 -1 -1 1: 5_o_Clock_Shadow, Arched_Eyebrows, Attractive,
    # Bags_Under_Eyes.
    row = sample.attributes.loc["000002.jpg"]
    assert list(row.iloc[:4]) == [0, 0, 0, 1]
    assert sample.identities.loc["000002.jpg"] == 2937


NAMES = ["Bald", "Smiling", "Young"]


def _layout(
    root: Path, attributes: str | None = None, identities: str | None = None, partitions: str | None = None
) -> Path:
    """A three-image dataset in CelebA's layout; each file can be replaced by the test's own text."""
    (root / IMAGE_DIR).mkdir(parents=True)
    default_attributes = (
        "3\nBald Smiling Young \n000001.jpg -1  1  1\n000002.jpg  1 -1  1\n000003.jpg -1 -1 -1\n"
    )
    (root / ATTRIBUTE_FILE).write_text(default_attributes if attributes is None else attributes)
    ids = "000001.jpg 5\n000002.jpg 5\n000003.jpg 9\n"
    (root / IDENTITY_FILE).write_text(ids if identities is None else identities)
    splits = "000001.jpg 0\n000002.jpg 0\n000003.jpg 2\n"
    (root / PARTITION_FILE).write_text(splits if partitions is None else partitions)
    return root


def test_reads_a_well_formed_layout(tmp_path: Path) -> None:
    data = load_celeba(_layout(tmp_path))
    assert data.attribute_names == NAMES
    assert data.attributes.loc["000002.jpg"].tolist() == [1, 0, 1]
    assert data.identities.to_dict() == {"000001.jpg": 5, "000002.jpg": 5, "000003.jpg": 9}
    assert data.partitions.tolist() == [0, 0, 2]
    assert data.image_path("000001.jpg") == tmp_path / IMAGE_DIR / "000001.jpg"


def test_tolerates_celeba_quirks(tmp_path: Path) -> None:
    """Runs of spaces, trailing spaces, blank lines and a count that disagrees with the rows."""
    text = "1000\n Bald  Smiling Young  \n\n000001.jpg   -1  1  1  \n000002.jpg 1 -1 1\n000003.jpg -1 -1 -1\n"
    data = load_celeba(_layout(tmp_path, attributes=text))
    assert data.attributes.to_numpy().tolist() == [[0, 1, 1], [1, 0, 1], [0, 0, 0]]


def test_accepts_zero_one_labels(tmp_path: Path) -> None:
    text = "3\nBald Smiling Young\n000001.jpg 0 1 1\n000002.jpg 1 0 1\n000003.jpg 0 0 0\n"
    data = load_celeba(_layout(tmp_path, attributes=text))
    assert data.attributes["Bald"].tolist() == [0, 1, 0]


@pytest.mark.parametrize("name", [IMAGE_DIR, ATTRIBUTE_FILE, IDENTITY_FILE, PARTITION_FILE])
def test_missing_file(tmp_path: Path, name: str) -> None:
    root = _layout(tmp_path)
    path = root / name
    path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(
        DataError, match=f"{re.escape(str(path))} not found.*CelebA's published layout"
    ) as error:
        load_celeba(root)
    assert "\n" not in str(error.value)


BAD_ATTRIBUTE_FILES = {
    "truncated row": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 -1\n000003.jpg -1 -1 -1\n",
        4,
        "found 2 \\(the row is truncated\\)",
    ),
    "cut-off last row": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 -1 1\n000003.jpg -1",
        5,
        "truncated",
    ),
    "extra value": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 -1 1 1\n000003.jpg -1 -1 -1\n",
        4,
        "found 4",
    ),
    "extra value in first row": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1 1\n000002.jpg 1 -1 1\n",
        3,
        "found 4",
    ),
    "text value": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 yes 1\n000003.jpg -1 -1 -1\n",
        4,
        "'yes' is not an integer",
    ),
    "value 2": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n\n000002.jpg 1 -1 1\n000003.jpg -1 2 -1\n",
        6,
        "Smiling is 2, but must be -1 or 1",
    ),
    "0 among -1/1": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 0 1\n000003.jpg -1 -1 -1\n",
        4,
        "Smiling is 0",
    ),
    "duplicate image": (
        "3\nBald Smiling Young\n000001.jpg -1 1 1\n000002.jpg 1 -1 1\n000001.jpg -1 -1 -1\n",
        5,
        "image 000001.jpg is listed twice",
    ),
    "no count": ("Bald Smiling Young\n000001.jpg -1 1 1\n", 1, "expected the number of images"),
    "no names": ("3\n000001.jpg -1 1 1\n000002.jpg 1 -1 1\n", 2, "expected the attribute names"),
    "repeated name": ("3\nBald Smiling Bald\n000001.jpg -1 1 1\n", 2, "Bald is named twice"),
}


@pytest.mark.parametrize("case", list(BAD_ATTRIBUTE_FILES))
def test_malformed_attribute_file_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, message = BAD_ATTRIBUTE_FILES[case]
    root = _layout(tmp_path, attributes=text)
    with pytest.raises(DataError, match=message) as error:
        load_celeba(root)
    assert str(error.value).startswith(f"{root / ATTRIBUTE_FILE}:{line}: ")
    assert "\n" not in str(error.value)


def test_malformed_identity_and_partition_files(tmp_path: Path) -> None:
    root = _layout(tmp_path / "a", identities="000001.jpg 5\n000002.jpg\n000003.jpg 9\n")
    with pytest.raises(DataError, match=f"^{re.escape(str(root / IDENTITY_FILE))}:2: .*truncated"):
        load_celeba(root)
    root = _layout(tmp_path / "b", partitions="000001.jpg 0\n000002.jpg 3\n000003.jpg 2\n")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(root / PARTITION_FILE))}:2: partition is 3, but must be 0, 1 or 2"
    ):
        load_celeba(root)
    root = _layout(tmp_path / "c", identities="000001.jpg 5\n000002.jpg 5\n000002.jpg 9\n")
    with pytest.raises(
        DataError, match=f"^{re.escape(str(root / IDENTITY_FILE))}:3: image 000002.jpg is listed twice"
    ):
        load_celeba(root)


def test_files_from_different_datasets(tmp_path: Path) -> None:
    root = _layout(tmp_path, identities="000001.jpg 5\n000002.jpg 5\n")
    with pytest.raises(DataError, match=re.escape("000003.jpg that identity_CelebA.txt lacks")):
        load_celeba(root)


def test_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    data = load_celeba(_layout(tmp_path))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(data.image_path("000001.jpg"))
    whole = data.image_path("000001.jpg").read_bytes()
    data.image_path("000002.jpg").write_bytes(whole[: len(whole) // 2])
    images = FaceImages([data.image_path(name) for name in data.attributes.index])
    assert images[0][0].shape == (3, 218, 178)
    with pytest.raises(
        DataError, match=f"^{re.escape(str(data.image_path('000002.jpg')))}: .*truncated"
    ) as error:
        images[1]
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=f"^{re.escape(str(data.image_path('000003.jpg')))}: image not found"):
        images[2]
