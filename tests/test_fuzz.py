"""Fuzzed input files: every label file, table, pairs file and config loads or is refused in one line.

Hypothesis writes files built from the formats' own tokens (so many examples get past the header and reach
the row checks) mixed with arbitrary text and bytes. The property: loading either succeeds or raises
:class:`FaceprobeError` with a one-line message; any other exception is a bug in a reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from faceprobe.data.celeba import ATTRIBUTE_FILE, IDENTITY_FILE, IMAGE_DIR, PARTITION_FILE, load_celeba
from faceprobe.data.folder import load_folder
from faceprobe.data.lfw import PAIRS_FILE, load_lfw_pairs
from faceprobe.errors import FaceprobeError
from faceprobe.run.config import load_config, parse_config

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Tokens of the formats: image names, labels in every spelling, counts, near misses and awkward characters.
TOKENS = st.sampled_from(
    [
        "000001.jpg",
        "000002.jpg",
        "a.jpg",
        "Smiling",
        "Male",
        "1",
        "-1",
        "0",
        "2",
        "3",
        "true",
        "False",
        "train",
        "test",
        "10",
        "1.5",
        "nan",
        "-",
        "",
        "99999999999999999999",
        "²",
        "é",
        "\x00",
        '"',
        ",",
        "\t",
        "\r",
        "#",
    ]
)
LINE = st.lists(st.one_of(TOKENS, st.text(max_size=4)), max_size=5).map(lambda t: " ".join(t))
CSV_LINE = st.lists(st.one_of(TOKENS, st.text(max_size=4)), max_size=5).map(lambda t: ",".join(t))


def _content(line: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    text = st.lists(line, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
    return st.one_of(text, text, st.binary(max_size=40))


def _loads_or_one_line(load: Callable[[], object]) -> None:
    try:
        load()
    except FaceprobeError as err:
        message = str(err)
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)


def _valid(lines: list[str]) -> bytes:
    return "\n".join(lines).encode()


# Valid label files of CelebA's two layouts (whitespace .txt, or Kaggle's .csv) and their line syntax.
LAYOUTS = {
    "txt": (
        {
            ATTRIBUTE_FILE: ["2", "Smiling Male", "000001.jpg 1 -1", "000002.jpg -1 1"],
            PARTITION_FILE: ["000001.jpg 0", "000002.jpg 2"],
        },
        LINE,
    ),
    "csv": (
        {
            "list_attr_celeba.csv": ["image_id,Smiling,Male", "000001.jpg,1,-1", "000002.jpg,-1,1"],
            "list_eval_partition.csv": ["image_id,partition", "000001.jpg,0", "000002.jpg,2"],
        },
        CSV_LINE,
    ),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@FUZZ
@given(data=st.data())
def test_celeba_label_files(tmp_path: Path, layout: str, data: st.DataObject) -> None:
    tables, line = LAYOUTS[layout]
    files = {**tables, IDENTITY_FILE: ["000001.jpg 7", "000002.jpg 8"]}
    broken = data.draw(st.sets(st.sampled_from(sorted(files)), min_size=1), label="broken files")
    (tmp_path / IMAGE_DIR).mkdir(exist_ok=True)
    for name, lines in files.items():
        fuzzed = name in broken and data.draw(_content(LINE if name == IDENTITY_FILE else line), label=name)
        (tmp_path / name).write_bytes(fuzzed if name in broken else _valid(lines))
    _loads_or_one_line(lambda: load_celeba(tmp_path))


@FUZZ
@given(
    header=CSV_LINE,
    rows=st.lists(CSV_LINE, max_size=5),
    raw=st.binary(max_size=40),
    use_raw=st.booleans(),
    name=st.sampled_from(["labels.csv", "labels.tsv", "labels.txt"]),
)
# Found by this test: pandas reads a row (empty id) that Python's line splitting does not see.
@example(header="", rows=[], raw=b"\x00\r\x0b", use_raw=True, name="labels.csv")
def test_folder_attribute_tables(tmp_path: Path, header, rows, raw, use_raw, name) -> None:
    (tmp_path / "images").mkdir(exist_ok=True)
    labels = tmp_path / name
    labels.write_bytes(raw if use_raw else "\n".join([header, *rows]).encode("utf-8", "surrogatepass"))
    _loads_or_one_line(lambda: load_folder(tmp_path / "images", labels))


@FUZZ
@given(
    pairs=_content(
        st.lists(st.sampled_from(["1", "2", "0", "Ann", "Bob", "x", "-1", "01"]), max_size=5).map(" ".join)
    )
)
def test_lfw_pairs_files(tmp_path: Path, pairs) -> None:
    for name in ("Ann", "Bob"):
        (tmp_path / "lfw" / name).mkdir(parents=True, exist_ok=True)
        for i in (1, 2):
            (tmp_path / "lfw" / name / f"{name}_{i:04d}.jpg").touch()
    (tmp_path / PAIRS_FILE).write_bytes(pairs)
    _loads_or_one_line(lambda: load_lfw_pairs(tmp_path))


# Config values: what TOML can hold, biased to the keys and kinds the config expects.
SCALARS = st.one_of(
    st.integers(-3, 10**12),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["synthetic:/nonexistent", "small", "random", "auto", "local", "dask", "all"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(
    [
        "spec",
        "attributes",
        "train",
        "val",
        "test",
        "seed",
        "skip_bad_images",
        "kinds",
        "groups",
        "architecture",
        "weights",
        "seeds",
        "layers",
        "input_size",
        "components",
        "top_k",
        "single_units",
        "vip_study",
        "depths",
        "fractions",
        "executor",
        "scheduler",
        "workers",
        "layers_per_unit",
        "batch_size",
        "device",
        "memory_gb",
        "store",
        "store_dtype",
        "other",
    ]
)
SECTION = st.dictionaries(KEYS, VALUES, max_size=6)
CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "data": st.one_of(SECTION.map(lambda s: {"spec": "synthetic:/x", **s}), VALUES),
        "models": st.one_of(
            st.lists(SECTION.map(lambda s: {"architecture": "small", **s}), max_size=2), VALUES
        ),
        "probe": st.one_of(SECTION, VALUES),
        "ablation": st.one_of(SECTION, VALUES),
        "run": st.one_of(SECTION, VALUES),
        "other": VALUES,
    },
)


@settings(max_examples=300, deadline=None, database=None)
@given(raw=CONFIG)
@example(raw={"data": {"spec": "synthetic:x", "attributes": "\r"}})  # echoed in its hint: escaped
def test_parsed_configs(raw) -> None:
    _loads_or_one_line(lambda: parse_config(raw, "fuzz.toml"))


@FUZZ
@given(
    text=_content(
        st.one_of(
            TOKENS,
            st.sampled_from(
                [
                    "[data]",
                    "[[models]]",
                    "[run]",
                    'spec = "a:b"',
                    'architecture = "small"',
                    "train = 4",
                    "x = [1,",
                    "= 2",
                ]
            ),
        )
    )
)
def test_config_files(tmp_path: Path, text) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(text)
    _loads_or_one_line(lambda: load_config(path))
