"""The activation store: exact round trips, resumption, reuse by key, and refusal of bad or partial data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from faceprobe.errors import FaceprobeError
from faceprobe.extract import describe_layers, extract
from faceprobe.extract.store import ActivationStore, extract_to_store, store_key
from faceprobe.models import SmallFaceNet

torch.set_num_threads(2)

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


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip_equals_in_memory_extraction(tmp_path, setup, dtype):
    model, data, layers, key = setup
    store = extract_to_store(
        model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4), dtype=dtype
    )
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
    assert done == [4, 2] and counter.images == 6  # only the missing batches ran
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
    bigger = ActivationStore.open(tmp_path / "b", key, batch_size=4)
    with pytest.raises(FaceprobeError, match="gives 8192 features per image but the store expects 2048"):
        extract_to_store(model, TensorDataset(torch.randn(10, 3, 64, 64)), layers[:1], bigger)


def test_checksum_detects_a_corrupted_chunk(tmp_path, setup):
    model, data, layers, key = setup
    store = extract_to_store(model, data, layers, ActivationStore.open(tmp_path, key, batch_size=4))
    chunk = store.path / "embedding" / "c" / "1" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    reopened = ActivationStore.open(tmp_path, key).layer("embedding")
    np.testing.assert_array_equal(reopened[:4], store.layer("embedding")[:4])  # other chunks still read
    with pytest.raises(ValueError, match="checksum"):
        reopened[:]
