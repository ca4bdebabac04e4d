"""The activation store: exact round trips, resumption, reuse by key, and refusal of bad or partial data."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import google_crc32c
import numpy as np
import pytest
import torch
import torchvision
import zarr
from torch.utils.data import TensorDataset

import faceprobe.extract.chunks as chunks_module
import faceprobe.extract.store as store_module
import faceprobe.extract.writer as writer_module
from faceprobe.errors import FaceprobeError
from faceprobe.extract import describe_layers, extract
from faceprobe.extract.chunks import BadChunk
from faceprobe.extract.store import ActivationStore, CorruptStoreError, extract_to_store, store_key
from faceprobe.models import SmallFaceNet
from faceprobe.pls import PLS

NAMES = ["backbone.stem", "backbone.stage1.0.residual", "embedding"]


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = SmallFaceNet(3, embedding_dim=8, widths=(8, 16)).eval()
    x = torch.randn(10, 3, 32, 32)
    layers = describe_layers(model, x[:1], NAMES)
    key = store_key(
        "small/random/s0", "d" * 64, {"input_size": [32, 32]}, [f"{i:06d}.jpg" for i in range(10)]
    )
    return model, TensorDataset(x, torch.zeros(10)), layers, key


class _Counter:
    """Counts the images that go through the network."""

    def __init__(self, model):
        self.images = 0
        model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.images += len(args[0])


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip_equals_in_memory_extraction(tmp_path, setup, dtype, compress):
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    for info in layers:  # LZ4 layers are written through zarr, plain ones by the store itself
        store.ensure_layer(info, np.dtype(dtype), compress=compress)
    store = extract_to_store(model, data, layers, store, dtype=dtype)
    expected = extract(model, data.tensors[0], NAMES, dtype=dtype)
    for info in layers:
        array = store.layer(info.name)
        assert array.dtype == dtype and array.shape == (10, info.features) and array.chunks[0] == 4
        np.testing.assert_array_equal(array[:], expected[info.name], err_msg=info.name)
        assert store.layer_shape(info.name) == info.shape
        assert array.attrs["layout"] == ("C,H,W" if len(info.shape) == 3 else "flat")
    # The same key finds the same store and nothing is recomputed.
    counter = _Counter(model)
    again = extract_to_store(
        model, data, layers, ActivationStore.open(tmp_path, key, batch_size=99), dtype=dtype
    )
    assert again.path == store.path and again.batch_size == 4 and counter.images == 0


def test_partly_written_store_resumes(tmp_path, setup):
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)

    def crash_after_first_batch(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_to_store(model, data, layers, store, progress=crash_after_first_batch)
    assert store.done("embedding").tolist() == [True, False, False]
    with pytest.raises(FaceprobeError, match="only partly extracted"):
        store.layer("embedding")
    counter, done = _Counter(model), []
    extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key), progress=done.append)
    assert done == [4, 2] and counter.images == 1 + 6  # the dry run's image, then only the missing batches
    expected = extract(model, data.tensors[0], NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name])
    # A layer added later is extracted alone, the finished ones are kept.
    extra = describe_layers(model, data.tensors[0][:1], ["classifier"])
    extract_to_store(model, data, [*layers, *extra], store)
    np.testing.assert_array_equal(
        store.layer("classifier")[:], extract(model, data.tensors[0], ["classifier"])["classifier"]
    )
    with pytest.raises(FaceprobeError, match=r"no layer 'backbone\.stem2'"):
        store.layer("backbone.stem2")


def test_mismatches_are_refused(tmp_path, setup):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    with pytest.raises(FaceprobeError, match=r"stored as \(10, 2048\) float32, not \(10, 2048\) float16"):
        extract_to_store(model, data, layers, store, dtype=np.float16)
    with pytest.raises(FaceprobeError, match="the dataset has 9 images but the store key says 10"):
        extract_to_store(model, TensorDataset(data.tensors[0][:9]), layers, store)
    other = store_key(
        "small/random/s1", "e" * 64, {"input_size": [32, 32]}, [f"{i:06d}.jpg" for i in range(10)]
    )
    assert ActivationStore.open(tmp_path, other).path != store.path
    store.group.attrs["key"] = other  # a folder whose recorded key differs from the one that names it
    with pytest.raises(FaceprobeError, match="holds another key"):
        ActivationStore.open(tmp_path, key)
    with pytest.raises(
        FaceprobeError, match=r"batch 2 of layer 'embedding' must be 2 x 8 values, not \(4, 8\)"
    ):
        store.write_batch(2, {"embedding": np.zeros((4, 8), np.float32)})
    bigger = ActivationStore.open(tmp_path / "b", key, batch_size=4)
    with pytest.raises(FaceprobeError, match="gives 8192 features per image but the store expects 2048"):
        extract_to_store(model, TensorDataset(torch.randn(10, 3, 64, 64)), layers[:1], bigger)


def _flip_a_byte(chunk):
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))


def test_corrupt_chunk_is_reported_scrubbed_and_recomputed(tmp_path, setup):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    original = {name: store.layer(name)[:] for name in NAMES}
    _flip_a_byte(store.path / "embedding" / "c" / "1" / "0")
    reopened = ActivationStore.open(tmp_path, key)
    embedding = reopened.layer("embedding")
    np.testing.assert_array_equal(embedding[:4], original["embedding"][:4])  # other chunks still read
    for read in (lambda: embedding[:], lambda: embedding.oindex[:, [0, 3]], lambda: np.asarray(embedding)):
        with pytest.raises(CorruptStoreError, match=rf"^{reopened.path}: layer 'embedding' has a chunk"):
            read()
    assert reopened.scrub(NAMES) == {"embedding": [1]}
    assert reopened.done("embedding").tolist() == [True, False, True]
    assert reopened.done("backbone.stem").all()
    counter = _Counter(model)
    extract_to_store(model, data, layers, reopened)
    assert counter.images == 1 + 4  # the dry run's image, then batch 1 alone
    assert reopened.scrub() == {}
    for name in NAMES:
        np.testing.assert_array_equal(reopened.layer(name)[:], original[name], err_msg=name)


def _checksummed(values):
    """Damage that the checksum cannot see: other bytes, with their own right CRC32C."""
    return lambda chunk: chunk.write_bytes(values + google_crc32c.value(values).to_bytes(4, "little"))


@pytest.mark.parametrize("compress", [False, True])
def test_bad_chunks_raise_bad_chunk_from_the_chunk_readers_and_scrub_finds_them(tmp_path, setup, compress):
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    for info in layers:
        store.ensure_layer(info, np.dtype(np.float32), compress=compress)
    extract_to_store(model, data, layers, store)
    chunk = store.path / "embedding" / "c" / "1" / "0"
    good = chunk.read_bytes()
    zarrs = zarr.Array(chunks_module._decoding(store.group["embedding"]))  # zarr's own codecs read it
    damages = {
        "a flipped byte": _flip_a_byte,
        "cut short": lambda c: c.write_bytes(good[:-8]),
        "undecodable": _checksummed(b"\x07" * 24),  # not LZ4, and not a 4 x 8 float32 chunk
    }
    for what, damage in damages.items():
        damage(chunk)
        if not compress:  # faceprobe's own readers
            with pytest.raises(BadChunk) as read:
                chunks_module._read_chunk(chunk, np.empty((4, 8), np.float32), check=True)
            with pytest.raises(BadChunk) as mapped:
                chunks_module._map_chunk(chunk, 4 * 8 * 4, check=True)
            assert read.value.path == mapped.value.path == chunk, what
        with pytest.raises(BadChunk):
            zarrs[4:8]
        with pytest.raises(CorruptStoreError):
            store.layer("embedding")[:]
        assert store.scrub(NAMES) == {"embedding": [1]}, what
        assert store.done("embedding").tolist() == [True, False, True]
        chunk.write_bytes(good)
        store.mark_done(1, ["embedding"])
    assert store.scrub() == {}


def test_chunks_are_byte_identical_to_zarrs_own(tmp_path, setup):
    # Uneven column chunks and a short last batch: every edge case of the store's own chunk writer.
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path / "mine", key, batch_size=4)
    store.chunk_bytes = 4 * 4 * 24  # 24 float32 columns per chunk: 2048 and 1024 features end mid-chunk
    extract_to_store(model, data, layers, store)
    reference = zarr.open_group(tmp_path / "zarr", mode="w")
    for info in layers:
        ours = store.layer(info.name)
        assert ours.chunks[1] == min(24, info.features)
        theirs = reference.create_array(
            ours.basename, shape=ours.shape, chunks=ours.chunks, dtype=ours.dtype,
            compressors=ours.compressors, fill_value=0,
        )  # fmt: skip
        theirs[:] = ours[:]
    # zarr skips chunks that hold only the fill value (the zero-initialised residual branch's)
    files = [p.relative_to(tmp_path / "zarr") for p in (tmp_path / "zarr").glob("*/c/*/*")]
    assert len(files) == 3 * (-(-2048 // 24) + 1)  # backbone.stem and embedding, 3 batches each
    for file in files:
        assert (store.path / file).read_bytes() == (tmp_path / "zarr" / file).read_bytes(), file


def test_outputs_changed_in_place_later_are_copied(tmp_path):
    # BasicBlock adds the shortcut into bn2's output and ReLUs bn1's in place; layer1.0 is left alone.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    x = torch.randn(6, 3, 32, 32)
    names = ["layer1.0.bn1", "layer1.0.bn2", "layer1.0", "layer2.0.downsample"]
    layers = describe_layers(model, x[:1], names)
    key = store_key("resnet18", "r" * 64, {}, [str(i) for i in range(6)])
    store = extract_to_store(
        model, TensorDataset(x), layers, ActivationStore.open(tmp_path, key, batch_size=4)
    )
    expected = extract(model, x, names)
    assert (expected["layer1.0.bn1"] < 0).any()
    for name in names:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name], err_msg=name)


def test_writer_errors_reach_the_caller_and_earlier_batches_stay_done(tmp_path, setup):
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    write = store.write_layer

    def fail_on_batch_1(batch, layer, values):
        if batch == 1:
            raise OSError("disk full")
        write(batch, layer, values)

    store.write_layer = fail_on_batch_1
    with pytest.raises(OSError, match="disk full"):
        extract_to_store(model, data, layers, store)
    assert store.done("embedding").tolist() == [True, False, False]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_read_rows_equals_zarrs_reads_for_any_rows_and_chunking(tmp_path, setup, dtype, compress):
    # 24-column chunks end mid-layer, the last batch is short, and the row ranges start and end anywhere:
    # every path of the direct chunk reader (whole chunks read in place, edge chunks through a scratch).
    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    store.chunk_bytes = 4 * 4 * 24
    for info in layers:
        store.ensure_layer(info, np.dtype(dtype), compress=compress)
    extract_to_store(model, data, layers, store, dtype=dtype)
    stem = store.layer("backbone.stem")
    whole = np.asarray(stem[:])
    for rows in (slice(0, 4), slice(4, 10), slice(1, 7), slice(9, 10), slice(0, 10)):
        out = np.full((rows.stop - rows.start, stem.shape[1]), np.nan, dtype)
        assert stem.read_rows(rows, out) is out
        np.testing.assert_array_equal(out, whole[rows], err_msg=str(rows))
    one_chunk_wide = ActivationStore.open(tmp_path / "wide", key, batch_size=4)
    extract_to_store(model, data, layers, one_chunk_wide, dtype=dtype)
    embedding = one_chunk_wide.layer("embedding")
    assert embedding.chunks == (4, 8)  # a whole chunk row is contiguous in out: read in place
    out = np.empty((8, 8), dtype)
    np.testing.assert_array_equal(embedding.read_rows(slice(0, 8), out), embedding[:8])


@pytest.mark.parametrize("rows", [slice(4, 8), slice(5, 7)], ids=["mapped chunk", "read into out"])
def test_read_rows_refuses_corrupt_short_or_missing_chunks(tmp_path, setup, rows):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    original = np.asarray(store.layer("embedding")[:])
    out = np.empty((rows.stop - rows.start, 8), np.float32)
    chunk = store.path / "embedding" / "c" / "1" / "0"
    good = chunk.read_bytes()
    for damage in (_flip_a_byte, lambda c: c.write_bytes(good[:-8]), lambda c: c.write_bytes(good + b"\0")):
        damage(chunk)
        with pytest.raises(CorruptStoreError, match=rf"^{store.path}: layer 'embedding' has a chunk"):
            store.layer("embedding").read_rows(rows, out)
    chunk.unlink()  # its batch is marked written: the file was deleted, its values are not zarr's fill value
    with pytest.raises(CorruptStoreError, match=rf"^{store.path}: layer 'embedding' has a chunk"):
        store.layer("embedding").read_rows(rows, out)
    assert store.scrub(["embedding"]) == {"embedding": [1]}  # and scrub has its batch extracted again
    store.mark_done(1, ["embedding"])
    chunk.write_bytes(good)
    np.testing.assert_array_equal(store.layer("embedding").read_rows(rows, out), original[rows])


def test_a_whole_chunk_is_mapped_and_its_checksum_checked_once_per_reader(tmp_path, setup):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    embedding = store.layer("embedding")
    original = np.asarray(embedding[:])
    out = np.zeros((4, 8), np.float32)
    mapped = embedding.read_rows(slice(4, 8), out)
    assert mapped is not out and not out.any()  # no copy made
    np.testing.assert_array_equal(mapped, original[4:8])
    mapped[0, 0] = 99.0  # copy-on-write: the file keeps its values
    del mapped
    np.testing.assert_array_equal(store.layer("embedding")[4:8], original[4:8])
    _flip_a_byte(store.path / "embedding" / "c" / "1" / "0")
    embedding.read_rows(slice(4, 8), out)  # this reader checked the chunk already: later passes trust it
    with pytest.raises(CorruptStoreError):
        store.layer("embedding").read_rows(slice(4, 8), out)  # a new reader checks again


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_fit_multiplies_stored_rows_where_they_are_read_and_converts_only_another_dtype(
    tmp_path, setup, dtype, monkeypatch
):
    """A pass over a float32 layer multiplies the mapped or read chunk rows in place (no copy of every
    block in every pass); float16 rows are converted, and the fit is the in-memory one's either way."""
    import faceprobe.pls

    model, data, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    store = extract_to_store(model, data, layers, store, dtype=dtype)
    converted = []
    real = faceprobe.pls._convert
    monkeypatch.setattr(faceprobe.pls, "_convert", lambda block, out: converted.append(1) or real(block, out))
    stored = store.layer("backbone.stem")
    y = np.arange(10) % 2
    fitted = PLS(2, block_bytes=1).fit(stored, y)  # a block of rows at a time
    assert (len(converted) > 0) == (dtype == np.float16)
    expected = PLS(2, block_bytes=1).fit(np.asarray(stored[:], dtype=np.float32), y)
    np.testing.assert_array_equal(fitted.x_scores_, expected.x_scores_)


def test_the_writer_queue_is_bounded_in_bytes_and_never_blocks_when_empty(tmp_path, setup, monkeypatch):
    # With a 1-byte bound every layer output waits for the previous one to be written, even one larger
    # than the bound: the extraction still completes, with the same values.
    model, data, layers, key = setup
    queued = []
    write_layer = ActivationStore.write_layer

    def spy(self, batch, layer, values):
        queued.append(writer_of[0]._queued)
        write_layer(self, batch, layer, values)

    writer_of = []
    real_writer = writer_module._Writer

    def recording_writer(store, max_bytes, written):
        writer_of.append(real_writer(store, max_bytes, written))
        return writer_of[-1]

    monkeypatch.setattr(store_module, "_QUEUE_BYTES", 1)
    monkeypatch.setattr(store_module, "_Writer", recording_writer)
    monkeypatch.setattr(ActivationStore, "write_layer", spy)
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    expected = extract(model, data.tensors[0], NAMES)
    sizes = {info.name: 4 * info.features * 4 for info in layers}
    assert len(queued) == 3 * len(NAMES) and max(queued) <= max(sizes.values())  # one output at a time
    for name in NAMES:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name], err_msg=name)


def test_batch_buffers_are_reused_from_batch_to_batch(tmp_path, setup, monkeypatch):
    model, data, layers, key = setup
    taken = []
    take = writer_module._Buffers.take

    def spy(self, shape, dtype):
        taken.append(take(self, shape, dtype))  # kept alive, so distinct buffers stay distinct objects
        return taken[-1]

    monkeypatch.setattr(writer_module._Buffers, "take", spy)
    monkeypatch.setattr(store_module, "_QUEUE_BYTES", 1)  # each output is written before the next is queued
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    assert len(taken) == 3 * len(NAMES)
    assert len({id(buffer) for buffer in taken}) == 2 * len(NAMES)  # batches 0 and 1 share; 2 is shorter
    expected = extract(model, data.tensors[0], NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name], err_msg=name)


def test_column_chunks_share_the_width_so_edge_chunks_waste_no_disk(tmp_path, setup):
    _, _, layers, key = setup
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    store.chunk_bytes = 4 * 4 * 600  # 600 float32 columns at most: 1024 features need two chunks
    residual = next(info for info in layers if info.name == "backbone.stage1.0.residual")
    assert residual.features == 1024
    store.ensure_layer(residual, np.dtype(np.float32))
    assert store.group["backbone.stage1.0.residual"].chunks == (4, 512)  # not 600 + a padded 424


def _direct_writes_work(folder) -> bool:
    """Whether ``folder``'s filesystem takes O_DIRECT writes (tmpfs and macOS do not)."""
    data = chunks_module._aligned(chunks_module._ALIGN)
    written = chunks_module._write_direct(folder / "probe", data, b"\0\0\0\0")
    (folder / "probe").unlink(missing_ok=True)
    return written


@pytest.mark.parametrize("nbytes", [1, 4092, 4093, 4096, 8191, 3 * 4096 + 5, 2**20])
def test_direct_and_buffered_chunk_writes_give_the_same_file(tmp_path, monkeypatch, nbytes):
    if not _direct_writes_work(tmp_path):
        pytest.skip(f"{tmp_path} does not take O_DIRECT writes; the buffered path is the only one here")
    data = chunks_module._aligned(nbytes)
    data[:] = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    chunks_module._write_atomically(tmp_path / "direct", data)
    monkeypatch.setattr(chunks_module, "_write_direct", lambda *args: False)
    chunks_module._write_atomically(tmp_path / "buffered", data)
    direct = (tmp_path / "direct").read_bytes()
    assert direct == (tmp_path / "buffered").read_bytes()
    assert len(direct) == nbytes + 4 and direct[:nbytes] == data.tobytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["buffered", "direct"]  # no partial left


def test_a_misaligned_buffer_or_a_refusing_filesystem_falls_back_to_buffered_writes(tmp_path, monkeypatch):
    data = chunks_module._aligned(5000)[1:]  # starts one byte past a block boundary
    data[:] = 7
    assert not chunks_module._write_direct(tmp_path / "misaligned", data, b"\0\0\0\0")
    assert not (tmp_path / "misaligned").exists()

    opened = []

    def refuse_direct(path, flags, *args):
        opened.append(flags)
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return os_open(path, flags, *args)

    os_open = os.open
    monkeypatch.setattr(chunks_module, "_NO_DIRECT", set())
    monkeypatch.setattr(os, "open", refuse_direct)
    aligned = chunks_module._aligned(5000)
    aligned[:] = 7
    for name in ("first", "second"):
        chunks_module._write_atomically(tmp_path / name, aligned)
        assert (tmp_path / name).read_bytes() == bytes(aligned) + google_crc32c.value(aligned).to_bytes(
            4, "little"
        )
    if hasattr(os, "O_DIRECT"):
        assert sum(bool(flags & os.O_DIRECT) for flags in opened) == 1  # the device is not asked twice
        assert chunks_module._NO_DIRECT == {tmp_path.stat().st_dev}


def test_store_chunks_go_straight_to_disk_where_the_filesystem_allows(tmp_path, setup, monkeypatch):
    if not _direct_writes_work(tmp_path):
        pytest.skip(f"{tmp_path} does not take O_DIRECT writes; the buffered path is the only one here")
    model, data, layers, key = setup
    results = []
    write_direct = chunks_module._write_direct
    monkeypatch.setattr(
        chunks_module, "_write_direct", lambda *args: results.append(write_direct(*args)) or results[-1]
    )
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    assert len(results) == 3 * len(NAMES) and all(results)  # whole and padded last batches alike
    expected = extract(model, data.tensors[0], NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name], err_msg=name)


def test_chunk_files_left_half_written_by_a_killed_writer_are_deleted_and_no_others(
    tmp_path, setup, monkeypatch
):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    folder = next(path for path in (store.path / NAMES[0]).rglob("c/*") if path.is_dir())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    host, pid = chunks_module._HOST, int(dead.stdout)
    left = {
        "killed here": folder / f"0.{host}.{pid}.{'a' * 32}.partial",
        "alive here": folder / f"0.{host}.{os.getpid()}.{'b' * 32}.partial",
        "another machine's": folder / f"0.elsewhere.{pid}.{'c' * 32}.partial",
        "unknown writer": folder / f"0.{'d' * 32}.partial",
    }
    for path in left.values():
        path.write_bytes(b"half a chunk")
    extract_to_store(model, data, layers, store)  # nothing left to extract: only tidies
    assert [what for what, path in left.items() if not path.exists()] == ["killed here"]
    expected = extract(model, data.tensors[0], NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(store.layer(name)[:], expected[name], err_msg=name)
    partials = []  # the writer's own names are the ones recognised
    monkeypatch.setattr(chunks_module, "_write_direct", lambda path, *args: partials.append(path) or False)
    chunks_module._write_atomically(tmp_path / "chunk", chunks_module._aligned(8))
    (partial,) = partials
    assert not chunks_module._stale(partial)  # this process is alive
    assert chunks_module._stale(partial.with_name(partial.name.replace(f".{os.getpid()}.", f".{pid}.")))
