"""Hostile and malformed inputs: each gets one ``error: ...`` line naming the file and the fix, or just works.

Never a traceback, never an "internal error", never a silently wrong result. Cases: labels and arrays of
``probe-array``, 16-bit and oversized images, label tables (duplicate headers, separators, encodings, no
rows), symbolic-link loops, corrupt checkpoints, and a full disk.
"""

from __future__ import annotations

import codecs
import errno
import gzip
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import faceprobe.atomic as atomic
from conftest import assert_one_line_error, run_cli
from faceprobe.data.celeba import ATTRIBUTE_FILE, IMAGE_DIR
from faceprobe.data.images import load_image
from faceprobe.data.lfw import load_lfw
from faceprobe.data.registry import load_dataset
from faceprobe.data.vggface2 import load_vggface2
from faceprobe.errors import DataError, FaceprobeError


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    """Long paths on one line: rich wraps the CLI's output at the terminal's width."""
    monkeypatch.setenv("COLUMNS", "400")


def _no_crash(proc) -> None:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "internal error" not in output, output


# --- probe-array: labels ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> Path:
    """X.npy: 60 samples x 2x4x4 features that carry the labels y (alternating 0/1)."""
    path = tmp_path_factory.mktemp("arrays")
    y = np.tile([0, 1], 30)
    X = np.random.default_rng(0).normal(size=(60, 2, 4, 4)).astype(np.float32)
    X[:, 1] += 2.0 * y[:, None, None]
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    return path


def _labels(folder: Path, name: str, content: object) -> Path:
    path = folder / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, np.asarray(content))
    return path


FIFTY_FIFTY = [0, 1] * 30

BAD_LABELS = {
    # name: (content, fragments of the one error line)
    "fractions.npy": ([0.3, 1.5] * 30, ["fractions.npy", "row 1 is 0.3", "not a binary label"]),
    "fractions.txt": ("0.3\n1.5\n" * 30, ["fractions.txt:1", "'0.3'", "not binary"]),
    "three.npy": ([-1, 0, 1] * 20, ["three.npy", "mix -1 and 0", "three classes"]),
    "three.txt": ("-1\n0\n1\n" * 20, ["three.txt", "mix -1 and 0"]),
    "two.npy": ([0, 2] * 30, ["two.npy", "row 2 is 2"]),
    "nan.npy": ([0.0, np.nan] * 30, ["nan.npy", "row 2 is nan"]),
    "matrix.npy": (np.tile([0, 1], (60, 2)), ["matrix.npy", "shape (60, 4)", "1-d"]),
    "one.npy": ([1] * 60, ["one.npy", "all 60 labels are positive", "both classes"]),
    "words.npy": (np.array(["yes", "maybe"] * 30), ["words.npy", "row 2", "'maybe'"]),
    "complex.npy": (np.array([0, 1] * 30, dtype=np.complex64), ["complex.npy", "complex64"]),
}


@pytest.mark.parametrize("name", sorted(BAD_LABELS))
def test_probe_array_refuses_labels_that_are_not_two_integer_classes(arrays, tmp_path, name):
    content, fragments = BAD_LABELS[name]
    labels = _labels(tmp_path, name, content)
    assert_one_line_error(run_cli("probe-array", str(arrays / "X.npy"), str(labels)), *fragments)


GOOD_LABELS = {
    "bool.npy": np.array(FIFTY_FIFTY, dtype=bool),
    "float.npy": np.array(FIFTY_FIFTY, dtype=np.float32),
    "minus.npy": np.array(FIFTY_FIFTY) * 2 - 1,
    "bigendian.npy": np.array(FIFTY_FIFTY, dtype=">i4"),
    "column.npy": np.array(FIFTY_FIFTY)[:, None],
    "savetxt.txt": "".join(f"{v:.18e}\n" for v in FIFTY_FIFTY),  # as numpy.savetxt writes them
    "words.txt": "".join(("true\n", "false\n")[v == 0] for v in FIFTY_FIFTY),
}


@pytest.mark.parametrize("name", sorted(GOOD_LABELS))
def test_every_spelling_of_two_classes_is_read_as_0_1(tmp_path, name):
    from faceprobe.arrays import load_labels

    labels = load_labels(_labels(tmp_path, name, GOOD_LABELS[name]), expected=60)
    assert labels.dtype == np.int8 and labels.tolist() == FIFTY_FIFTY


def test_probe_array_accepts_labels_written_by_savetxt(arrays, tmp_path):
    labels = _labels(tmp_path, "savetxt.txt", GOOD_LABELS["savetxt.txt"])
    proc = run_cli("probe-array", str(arrays / "X.npy"), str(labels))
    assert proc.returncode == 0, proc.stderr
    _no_crash(proc)
    assert _layer_accuracy(proc.stdout) >= 90, proc.stdout  # the planted signal is found


def _layer_accuracy(stdout: str) -> float:
    """The whole layer's validation accuracy (%) in probe-array's table."""
    rows = {
        line.split("│")[1].strip(): line.split("│") for line in stdout.splitlines() if line.count("│") > 3
    }
    return float(rows["layer"][3].strip().rstrip("%"))


# --- probe-array: arrays ------------------------------------------------------------------------------------


def _truncated(folder: Path, name: str, array: np.ndarray, keep: float) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, array)
    data = buffer.getvalue()
    (folder / name).write_bytes(data[: int(len(data) * keep)])
    return folder / name


def test_probe_array_reads_big_endian_arrays_as_native(arrays, tmp_path):
    X = np.load(arrays / "X.npy")
    native = run_cli("probe-array", str(arrays / "X.npy"), str(arrays / "y.npy"))
    for dtype in (">f4", ">f8"):
        np.save(tmp_path / "X.npy", X.astype(dtype))
        proc = run_cli("probe-array", str(tmp_path / "X.npy"), str(arrays / "y.npy"))
        assert proc.returncode == 0, proc.stderr
        _no_crash(proc)
        assert proc.stdout.splitlines()[1:] == native.stdout.splitlines()[1:], (dtype, proc.stdout)


BAD_ARRAYS = {
    "empty.npy": (
        lambda f: np.save(f / "empty.npy", np.zeros((0, 32), np.float32)),
        ["shape (0, 32)", "no rows"],
    ),
    "nofeatures.npy": (
        lambda f: np.save(f / "nofeatures.npy", np.zeros((60, 0), np.float32)),
        ["shape (60, 0)", "no features"],
    ),
    "truncated.npy": (
        lambda f: _truncated(f, "truncated.npy", np.ones((60, 32), np.float32), 0.5),
        ["truncated", "(60, 32) float32", "write it again"],
    ),
    "header.npy": (
        lambda f: _truncated(f, "header.npy", np.ones((60, 32), np.float32), 0.005),
        ["header is corrupt or cut short"],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_probe_array_names_empty_and_truncated_arrays(arrays, tmp_path, name):
    write, fragments = BAD_ARRAYS[name]
    write(tmp_path)
    proc = run_cli("probe-array", str(tmp_path / name), str(arrays / "y.npy"))
    assert_one_line_error(proc, name, *fragments)
    assert "Python objects" not in proc.stderr


def test_probe_array_names_truncated_labels(arrays, tmp_path):
    _truncated(tmp_path, "y.npy", np.array(FIFTY_FIFTY), 0.8)
    proc = run_cli("probe-array", str(arrays / "X.npy"), str(tmp_path / "y.npy"))
    assert_one_line_error(proc, "y.npy", "truncated")


# --- images: 16 bits, floats, decompression bombs ---------------------------------------------------------


GRADIENT = np.linspace(0, 65535, 32 * 32).round().reshape(32, 32).astype(np.uint16)


@pytest.mark.parametrize(("dtype", "format"), [("<u2", "PNG"), ("<u2", "TIFF"), (">u2", "TIFF")])
def test_16_bit_images_are_scaled_to_8_bits(tmp_path, dtype, format):
    path = tmp_path / f"face.{format.lower()}"
    Image.fromarray(GRADIENT.astype(dtype)).save(path, format=format)
    assert Image.open(path).mode.startswith("I;16")
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    expected = np.round(GRADIENT / 257)
    assert np.abs(pixels[..., 0] - expected).max() <= 1  # not the all-white image PIL's convert makes
    assert (pixels[..., 0] == pixels[..., 2]).all()


def _copy_faces(tiny_faces: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_faces, tmp_path / "faces"))


def test_data_check_decodes_a_16_bit_png(tiny_faces, tmp_path):
    root = _copy_faces(tiny_faces, tmp_path)
    Image.fromarray(GRADIENT).save(root / IMAGE_DIR / "000001.jpg", format="PNG")
    proc = run_cli("data", "check", f"synthetic:{root}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no bad images" in proc.stdout and "72 usable images" in proc.stdout


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` pixels (CRC fixed, so PIL believes it)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


UNREADABLE_IMAGES = {
    # image id: (bytes or writer, fragment of the reason)
    "000002.jpg": (_png_declaring(100_000, 100_000), "decompression bomb"),  # PIL's DecompressionBombError
    "000003.jpg": (_png_declaring(10_000, 10_000), "declares 10000x10000 pixels"),  # PIL only warns
    "000004.jpg": (lambda p: Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(p, "TIFF"), "floating"),
}


def _spoil(root: Path) -> None:
    for image_id, (content, _) in UNREADABLE_IMAGES.items():
        path = root / IMAGE_DIR / image_id
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)


def test_data_check_lists_bombs_and_float_images_as_bad(tiny_faces, tmp_path):
    root = _copy_faces(tiny_faces, tmp_path)
    _spoil(root)
    proc = run_cli("data", "check", f"synthetic:{root}")
    _no_crash(proc)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    listing = proc.stdout
    assert "3 bad images" in listing, proc.stdout
    for image_id, (_, fragment) in UNREADABLE_IMAGES.items():
        assert f"{IMAGE_DIR}/{image_id}: " in listing and fragment in listing, proc.stdout


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest resets faceprobe's filter
def test_bomb_is_a_bad_image_skipped_or_named(tiny_faces, tmp_path):
    root = _copy_faces(tiny_faces, tmp_path)
    _spoil(root)
    ids = list(UNREADABLE_IMAGES)
    skipping = load_dataset(f"synthetic:{root}", skip_bad_images=True).scan(ids, workers=2)
    assert sorted(bad.image_id for bad in skipping.skipped) == ids
    assert not set(ids) & set(skipping.ids)
    with pytest.raises(DataError, match=r"000002\.jpg: declares .*; restore the file, or pass --skip"):
        load_dataset(f"synthetic:{root}").scan(["000002.jpg"], workers=1)
    with pytest.raises(DataError, match=r"000003\.jpg: declares 10000x10000 pixels"):
        load_image(root / IMAGE_DIR / "000003.jpg")


# --- label tables: duplicate headers, separators, encodings, no rows ----------------------------------------


def _rows(tiny_faces: Path) -> list[list[str]]:
    """image, Eyeglasses, Smiling of every tiny face, as CelebA's -1/1."""
    lines = (tiny_faces / ATTRIBUTE_FILE).read_text().splitlines()
    names = lines[1].split()
    columns = [1 + names.index("Eyeglasses"), 1 + names.index("Smiling")]
    return [[fields[0], *(fields[c] for c in columns)] for fields in map(str.split, lines[2:])]


def _table(tiny_faces: Path, header: list[str], sep: str = ",") -> str:
    return sep.join(header) + "\n" + "".join(sep.join(row) + "\n" for row in _rows(tiny_faces))


def _folder(tiny_faces: Path, labels: Path) -> str:
    return f"folder:{tiny_faces / IMAGE_DIR},{labels}"


DUPLICATES = {
    "labels.csv": ("image_id,Eyeglasses,Eyeglasses", ","),
    "spaced.csv": ("image_id, Eyeglasses ,Eyeglasses", ","),
    "labels.tsv": ("image_id\tEyeglasses\tEyeglasses", "\t"),
}


@pytest.mark.parametrize("name", sorted(DUPLICATES))
def test_duplicate_header_column_is_named(tiny_faces, tmp_path, name):
    header, sep = DUPLICATES[name]
    labels = tmp_path / name
    labels.write_text(_table(tiny_faces, header.split(sep), sep))
    proc = run_cli("data", "check", _folder(tiny_faces, labels))
    assert_one_line_error(proc, f"{name}:1", "'Eyeglasses'", "twice")


def test_duplicate_header_column_in_celeba_csv_is_named(tiny_faces, tmp_path):
    root = _copy_faces(tiny_faces, tmp_path)
    (root / ATTRIBUTE_FILE).unlink()
    (root / "list_attr_celeba.csv").write_text(_table(tiny_faces, ["image_id", "Eyeglasses", "Eyeglasses"]))
    proc = run_cli("data", "check", f"celeba:{root}")
    assert_one_line_error(proc, "list_attr_celeba.csv:1", "'Eyeglasses'", "twice")


def _utf16_without_bom(text: str) -> bytes:
    return text.encode("utf-16-le")


TABLE = ["image_id", "Eyeglasses", "Smiling"]
BAD_TABLES = {
    # file name: (content from the tiny faces' rows, fragments of the one error line)
    "tabs.csv": (lambda t: _table(t, TABLE, "\t").encode(), ["tabs.csv:1", "looks tab-separated", ".tsv"]),
    "semicolons.csv": (lambda t: _table(t, TABLE, ";").encode(), ["looks semicolon-separated"]),
    "commas.tsv": (lambda t: _table(t, TABLE).encode(), ["commas.tsv:1", "looks comma-separated", ".csv"]),
    "latin1.csv": (
        lambda t: _table(t, [*TABLE[:2], "Lächeln"]).encode("latin-1"),
        ["latin1.csv:1", "not UTF-8", "byte 0xe4", "Latin-1", "save it as UTF-8"],
    ),
    "utf16.csv": (
        lambda t: _table(t, TABLE).encode("utf-16"),
        ["utf16.csv", "is UTF-16", "save it as UTF-8"],
    ),
    "utf16le.csv": (lambda t: _utf16_without_bom(_table(t, TABLE)), ["utf16le.csv", "is UTF-16"]),
    "header.csv": (lambda t: b"image_id,Eyeglasses,Smiling\n\n", ["header.csv", "has a header but no rows"]),
    "packed.csv": (lambda t: gzip.compress(_table(t, TABLE).encode()), ["packed.csv", "gzip"]),
    "book.csv": (lambda t: b"PK\x03\x04" + bytes(64), ["book.csv", "export it as CSV"]),
    "unnamed.csv": (lambda t: _table(t, ["image_id", "", "Smiling"]).encode(), ["unnamed.csv:1", "column 2"]),
}


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_label_table_format_and_encoding_are_named(tiny_faces, tmp_path, name):
    content, fragments = BAD_TABLES[name]
    labels = tmp_path / name
    labels.write_bytes(content(tiny_faces))
    assert_one_line_error(run_cli("data", "check", _folder(tiny_faces, labels)), *fragments)


def test_utf8_table_with_byte_order_mark_just_works(tiny_faces, tmp_path):
    labels = tmp_path / "excel.csv"
    labels.write_bytes(codecs.BOM_UTF8 + _table(tiny_faces, TABLE).encode())
    proc = run_cli("data", "check", _folder(tiny_faces, labels))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "72 usable images" in proc.stdout


@pytest.mark.parametrize(
    ("name", "content", "fragments"),
    [
        (ATTRIBUTE_FILE, lambda text: text.encode("utf-16"), ["is UTF-16"]),
        (
            ATTRIBUTE_FILE,
            lambda text: "\n".join(text.splitlines()[:2]).encode(),
            ["header lines but no rows"],
        ),
        ("list_eval_partition.txt", lambda text: b"", ["is empty"]),
    ],
    ids=["utf16", "header-only", "empty-partitions"],
)
def test_celeba_text_files_format_is_named(tiny_faces, tmp_path, name, content, fragments):
    root = _copy_faces(tiny_faces, tmp_path)
    (root / name).write_bytes(content((root / name).read_text()))
    assert_one_line_error(run_cli("data", "check", f"celeba:{root}"), name, *fragments)


# --- symbolic-link loops -----------------------------------------------------------------------------------


def _vggface2(tiny_faces: Path, root: Path) -> Path:
    (root / "train" / "n000001").mkdir(parents=True)
    shutil.copy(tiny_faces / IMAGE_DIR / "000001.jpg", root / "train" / "n000001" / "0001_01.jpg")
    return root


def _lfw(tiny_faces: Path, root: Path) -> Path:
    (root / "lfw" / "Ann").mkdir(parents=True)
    shutil.copy(tiny_faces / IMAGE_DIR / "000001.jpg", root / "lfw" / "Ann" / "Ann_0001.jpg")
    return root


LOOPS = {
    # name: (kind, make the dataset, the looping link relative to the root)
    "vggface2-self": ("vggface2", _vggface2, ["train/loop"]),
    "vggface2-pair": ("vggface2", _vggface2, ["train/n000002", "train/n000003"]),
    "vggface2-split": ("vggface2", _vggface2, ["test"]),
    "lfw-person": ("lfw", _lfw, ["lfw/Bob"]),
    "lfw-pair": ("lfw", _lfw, ["lfw/Bob", "lfw/Cy"]),
}


def _loop(root: Path, links: list[str]) -> Path:
    """Links in a ring: each points to the next, the last to the first."""
    paths = [root / link for link in links]
    for path, target in zip(paths, paths[1:] + paths[:1], strict=True):
        path.symlink_to(target.name)
    return paths[0]


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_symlink_loop_is_one_line_naming_it(tiny_faces, tmp_path, case):
    kind, make, links = LOOPS[case]
    root = make(tiny_faces, tmp_path / "data")
    _loop(root, links)
    proc = run_cli("data", "check", f"{kind}:{root}")
    assert_one_line_error(proc, str(root), "symbolic-link loop", "fix or remove the link")
    assert any(link in proc.stderr for link in links), proc.stderr


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_symlink_loop_raises_data_error(tiny_faces, tmp_path, case):
    kind, make, links = LOOPS[case]
    root = make(tiny_faces, tmp_path / "data")
    _loop(root, links)
    with pytest.raises(DataError, match="symbolic-link loop"):
        (load_vggface2 if kind == "vggface2" else load_lfw)(root)


def test_symlink_loop_of_an_image_is_a_bad_image(tiny_faces, tmp_path):
    root = _vggface2(tiny_faces, tmp_path / "data")
    _loop(root / "train" / "n000001", ["0002_01.jpg", "0003_01.jpg"])
    proc = run_cli("data", "check", f"vggface2:{root}")
    _no_crash(proc)
    assert proc.returncode == 1 and "2 bad images" in proc.stdout, proc.stdout + proc.stderr
    assert "0002_01.jpg: a symbolic-link loop" in proc.stdout


# --- checkpoints -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from faceprobe.models import SmallFaceNet
    from faceprobe.models.checkpoint import save_checkpoint

    return save_checkpoint(
        SmallFaceNet(3), tmp_path_factory.mktemp("ckpt") / "good", {"architecture": "small", "num_classes": 3}
    )


def _weights(change):
    return lambda data, meta: (change(data), meta)


def _meta(change):
    return lambda data, meta: (data, change(meta))


BAD_CHECKPOINTS = {
    # name: (change (weights bytes, metadata text), file named, fragment)
    "truncated-weights": (_weights(lambda w: w[: len(w) // 2]), "model.safetensors", "truncated"),
    "garbage-weights": (_weights(lambda w: b"not a safetensors file"), "model.safetensors", "corrupt"),
    "empty-weights": (_weights(lambda w: b""), "model.safetensors", "corrupt"),
    "huge-header": (
        _weights(lambda w: (2**60).to_bytes(8, "little") + w[8:]),
        "model.safetensors",
        "corrupt",
    ),
    "not-json": (_meta(lambda m: m[: len(m) // 2]), "metadata.json", "not JSON"),
    "not-utf8": (_meta(lambda m: "\udcff" + m), "metadata.json", "not UTF-8"),
    "no-architecture": (
        _meta(lambda m: json.dumps({k: v for k, v in json.loads(m).items() if k != "architecture"})),
        "metadata.json",
        '"architecture"',
    ),
    "a-list": (_meta(lambda m: "[1, 2]"), "metadata.json", "JSON list"),
    "bad-preprocessing": (
        _meta(lambda m: json.dumps({**json.loads(m), "preprocessing": 5})),
        "metadata.json",
        '"preprocessing"',
    ),
    "unknown-architecture": (
        _meta(lambda m: json.dumps({**json.loads(m), "architecture": "nope"})),
        "metadata.json",
        "'nope'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_corrupt_checkpoint_is_one_line_naming_the_file(checkpoint, tmp_path, case):
    change, named, fragment = BAD_CHECKPOINTS[case]
    folder = Path(shutil.copytree(checkpoint, tmp_path / case))
    weights, meta = change(
        (folder / "model.safetensors").read_bytes(), (folder / "metadata.json").read_text()
    )
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "metadata.json").write_bytes(meta.encode("utf-8", "surrogateescape"))
    proc = run_cli("layers", "small", "--weights", f"checkpoint:{folder}")
    assert_one_line_error(proc, str(folder / named), fragment, "save the model again")


# --- a full disk -------------------------------------------------------------------------------------------


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as os.write and file.write raise it: no name


def test_disk_full_on_a_file_descriptor_names_the_path(tmp_path):
    target = tmp_path / "store" / "c" / "0" / "0"
    with pytest.raises(FaceprobeError) as error, atomic.writing(target):
        raise _enospc()
    assert str(error.value).startswith(f"{target}: disk full (No space left on device)")
    other = OSError(errno.EIO, os.strerror(errno.EIO))
    with pytest.raises(OSError) as raised, atomic.writing(target):
        raise other
    assert raised.value.filename == str(target)  # other errors keep their type and gain the name


def test_disk_full_without_a_path_says_what_to_do():
    message = str(atomic.disk_full_error(None, _enospc()))
    assert "None" not in message and "a file" not in message
    assert message.startswith("disk full (No space left on device)") and "free space" in message


def test_atomic_write_on_a_full_disk_names_the_target(tmp_path, monkeypatch):
    def full(self, data):
        raise _enospc()

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(FaceprobeError, match=rf"^{tmp_path / 'results.json'}: disk full"):
        atomic.atomic_write_text(tmp_path / "results.json", "{}")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_saving_a_checkpoint_on_a_full_disk_names_the_weights(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import faceprobe.models.checkpoint as checkpoint
    from faceprobe.models import SmallFaceNet

    def full(model, filename):
        Path(filename).write_text("half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(FaceprobeError, match=rf"^{tmp_path / 'ckpt' / 'model.safetensors'}: disk full"):
        checkpoint.save_checkpoint(
            SmallFaceNet(3), tmp_path / "ckpt", {"architecture": "small", "num_classes": 3}
        )
    assert list((tmp_path / "ckpt").iterdir()) == []  # nothing half-written is left to be loaded later
