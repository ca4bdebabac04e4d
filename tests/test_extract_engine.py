"""How the extraction engine runs the network: stop after the last layer, bfloat16 autocast, dry run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from faceprobe.devices import autocast
from faceprobe.errors import FaceprobeError
from faceprobe.extract import describe_layers, extract
from faceprobe.extract.hooks import _dry_run
from faceprobe.extract.store import ActivationStore, extract_to_store, store_key

NAMES = ["layer1.1", "layer2.0.bn2", "layer2.0"]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=4).eval()


class _Images:
    """Counts the images each module sees."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.seen = dict.fromkeys(names, 0)
        self._handles = [
            model.get_submodule(name).register_forward_pre_hook(self._hook(name)) for name in names
        ]

    def _hook(self, name):
        def hook(module, args):
            self.seen[name] += len(args[0])

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.mark.parametrize("to_store", [False, True])
def test_forward_stops_after_the_last_requested_layer(tmp_path, resnet, to_store):
    x = torch.randn(10, 3, 32, 32)
    batches = list(x.split(4))
    layers = describe_layers(resnet, x[:1], NAMES)

    def run(stop):
        if not to_store:
            return extract(resnet, batches, NAMES, stop=stop)
        key = store_key("resnet18", "r" * 64, {"stop": stop}, [str(i) for i in range(10)])
        store = ActivationStore.open(tmp_path, key, batch_size=4)
        extract_to_store(resnet, TensorDataset(x), layers, store, stop=stop)
        return {name: store.layer(name)[:] for name in NAMES}

    images = _Images(resnet, ["layer2.0.conv1", "layer2.1", "fc"])
    try:
        stopped = run(stop=True)
        assert images.seen == {"layer2.0.conv1": 1 + 10, "layer2.1": 1, "fc": 1}  # 1: the dry run
        full = run(stop=False)
        assert images.seen == {"layer2.0.conv1": 2 + 20, "layer2.1": 2 + 10, "fc": 2 + 10}
    finally:
        images.remove()
    for name in NAMES:
        np.testing.assert_array_equal(stopped[name], full[name], err_msg=name)


def test_stop_still_finds_modules_that_run_twice(resnet):
    # layer1.0.relu runs after bn1 and again later: the dry run sees the whole forward, not the stopped one.
    with pytest.raises(FaceprobeError, match=r"'layer1\.0\.relu' runs more than once"):
        extract(resnet, torch.randn(2, 3, 32, 32), ["layer1.0.relu"])


def test_dry_run_gives_the_features_of_each_layer(resnet):
    names = ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.bn2", "layer1.0", "layer2.0.downsample", "fc"]
    assert _dry_run(resnet, torch.randn(1, 3, 32, 32), names, "float32") == {
        "layer1.0.conv1": 64 * 8 * 8,
        "layer1.0.bn1": 64 * 8 * 8,
        "layer1.0.bn2": 64 * 8 * 8,
        "layer1.0": 64 * 8 * 8,
        "layer2.0.downsample": 128 * 4 * 4,
        "fc": 4,
    }


def _close_but_not_equal(low: np.ndarray, full: np.ndarray) -> None:
    assert not np.array_equal(low, full)  # autocast was on
    assert np.abs(low - full).max() <= 0.05 * np.abs(full).max()
    assert np.corrcoef(low.ravel(), full.ravel())[0, 1] > 0.999


def test_bfloat16_autocast_is_close_to_float32(tmp_path, resnet):
    x = torch.randn(6, 3, 32, 32)
    full = extract(resnet, x, NAMES)
    low = extract(resnet, x, NAMES, precision="bfloat16")
    key = store_key("resnet18", "r" * 64, {}, [str(i) for i in range(6)])
    store = ActivationStore.open(tmp_path, key, batch_size=4)
    layers = describe_layers(resnet, x[:1], NAMES)
    extract_to_store(resnet, TensorDataset(x), layers, store, dtype=np.float16, precision="bfloat16")
    for name in NAMES:
        assert low[name].dtype == np.float32 and store.layer(name).dtype == np.float16
        _close_but_not_equal(low[name], full[name])
        _close_but_not_equal(store.layer(name)[:].astype(np.float32), full[name])


def test_unknown_precision_is_refused(resnet):
    with pytest.raises(FaceprobeError, match="unknown precision 'float8'; use float32 or bfloat16"):
        autocast("cpu", "float8")
    with pytest.raises(FaceprobeError, match="unknown precision"):
        extract(resnet, torch.randn(2, 3, 32, 32), ["fc"], precision="fp16")


class _SlowImages(torch.utils.data.Dataset):
    """Images whose loading records its thread and takes a while; image ``bad`` fails to load."""

    def __init__(self, n: int, bad: int = -1) -> None:
        self.n, self.bad, self.loaders = n, bad, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        import threading
        import time

        self.loaders.append(threading.get_ident())
        time.sleep(0.005)
        if i == self.bad:
            raise OSError(f"image {i} unreadable")
        return torch.full((3, 16, 16), float(i))


def test_batches_are_loaded_on_another_thread_while_the_network_runs_in_order():
    import threading

    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    images = _SlowImages(12)
    out = extract(model, torch.utils.data.DataLoader(images, batch_size=2), ["0"])["0"]
    with torch.no_grad():  # every image once, in order
        expected = model(torch.stack([images[i] for i in range(12)])).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    loaded = images.loaders[:12]
    assert set(loaded[:2]) == {threading.get_ident()}  # the first batch, before the dry run: here
    assert threading.get_ident() not in loaded[2:]  # the others ahead, on the loading thread


def test_a_failing_batch_raises_its_own_error_in_the_caller():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    loader = torch.utils.data.DataLoader(_SlowImages(12, bad=7), batch_size=2)
    with pytest.raises(OSError, match="image 7 unreadable"):
        extract(model, loader, ["0"])
