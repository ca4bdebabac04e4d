"""The model zoo: architectures, weight origins, checkpoints from the wild, preprocessing, devices."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from faceprobe.cli.model_options import load_from_options
from faceprobe.devices import CPU_BATCH_SIZE, fit_batch_size, resolve_device
from faceprobe.errors import FaceprobeError
from faceprobe.models import ARCHITECTURES, Preprocessing, SmallFaceNet, load_model
from faceprobe.models.checkpoint import save_checkpoint
from faceprobe.models.loading import imagenet_path
from faceprobe.models.preprocessing import parse_size


def _bn(keys: dict, name: str, c: int) -> None:
    for param in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{param}"] = (c,)
    keys[f"{name}.num_batches_tracked"] = ()


def insightface_iresnet_keys(layers: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of insightface's iresnet (arcface_torch/backbones/iresnet.py), 112x112."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 3, 3)}
    _bn(keys, "bn1", 64)
    keys["prelu.weight"] = (64,)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
        for j in range(blocks):
            p, c_in = f"layer{i}.{j}.", inplanes if j == 0 else planes
            _bn(keys, p + "bn1", c_in)
            keys[p + "conv1.weight"] = (planes, c_in, 3, 3)
            _bn(keys, p + "bn2", planes)
            keys[p + "prelu.weight"] = (planes,)
            keys[p + "conv2.weight"] = (planes, planes, 3, 3)
            _bn(keys, p + "bn3", planes)
            if j == 0:
                keys[p + "downsample.0.weight"] = (planes, c_in, 1, 1)
                _bn(keys, p + "downsample.1", planes)
        inplanes = planes
    _bn(keys, "bn2", 512)
    keys["fc.weight"], keys["fc.bias"] = (512, 512 * 7 * 7), (512,)
    _bn(keys, "features", 512)
    return keys


def mobilefacenet_keys(final: tuple[int, int] = (7, 7)) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of InsightFace_Pytorch's MobileFaceNet (model.py), 128-d."""
    keys: dict[str, tuple[int, ...]] = {}

    def block(name: str, c_in: int, c_out: int, k: tuple[int, int], groups: int = 1, prelu: bool = True):
        keys[f"{name}.conv.weight"] = (c_out, c_in // groups, *k)
        _bn(keys, f"{name}.bn", c_out)
        if prelu:
            keys[f"{name}.prelu.weight"] = (c_out,)

    def depth_wise(name: str, c_in: int, c_out: int, groups: int):
        block(f"{name}.conv", c_in, groups, (1, 1))
        block(f"{name}.conv_dw", groups, groups, (3, 3), groups=groups)
        block(f"{name}.project", groups, c_out, (1, 1), prelu=False)

    block("conv1", 3, 64, (3, 3))
    block("conv2_dw", 64, 64, (3, 3), groups=64)
    depth_wise("conv_23", 64, 64, 128)
    for j in range(4):
        depth_wise(f"conv_3.model.{j}", 64, 64, 128)
    depth_wise("conv_34", 64, 128, 256)
    for j in range(6):
        depth_wise(f"conv_4.model.{j}", 128, 128, 256)
    depth_wise("conv_45", 128, 128, 512)
    for j in range(2):
        depth_wise(f"conv_5.model.{j}", 128, 128, 256)
    block("conv_6_sep", 128, 512, (1, 1))
    block("conv_6_dw", 512, 512, final, groups=512, prelu=False)
    keys["linear.weight"] = (128, 512)
    _bn(keys, "bn", 128)
    return keys


def random_state(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        k: torch.tensor(3) if k.endswith("num_batches_tracked") else torch.rand(shape, generator=gen) + 0.1
        for k, shape in keys.items()
    }


def _out(model: nn.Module, size=(32, 32)) -> torch.Tensor:
    torch.manual_seed(5)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, *size))


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_model("resnet18", seed=1)
    assert torch.equal(torch.rand(1), before)
    assert a.digest == load_model("resnet18", seed=1).digest != load_model("resnet18", seed=2).digest
    assert a.name == "resnet18/random/s1" and a.weights == "random" and not a.module.training
    assert len(a.digest) == 64


@pytest.mark.parametrize(
    ("arch", "size", "out"),
    [("small", (32, 32), 100), ("resnet18", (32, 32), 1000), ("resnet34", (32, 32), 1000),
     ("mobilenet_v2", (32, 32), 1000), ("iresnet18", (32, 32), 512), ("mobilefacenet", (48, 32), 128)],
)  # fmt: skip
def test_architectures_build_and_run(arch, size, out):
    lm = load_model(arch, input_size=size)
    assert _out(lm.module, size).shape == (2, out)
    assert lm.embedding is not None and lm.module.get_submodule(lm.embedding) is not None


def test_registry_defaults_follow_the_thesis_and_the_papers():
    assert set(ARCHITECTURES) >= {
        "resnet50",
        "mobilenet_v2",
        "vgg16",
        "iresnet50",
        "iresnet100",
        "mobilefacenet",
    }
    vgg = ARCHITECTURES["vgg16"].preprocessing
    assert (vgg.input_size, vgg.resize_shorter, vgg.mean) == ((224, 224), 256, (0.485, 0.456, 0.406))
    face = ARCHITECTURES["iresnet50"].preprocessing
    assert (face.input_size, face.resize_shorter, face.mean, face.std) == (
        (112, 112),
        None,
        (0.5,) * 3,
        (0.5,) * 3,
    )
    # A smaller input keeps the thesis framing: resize the shorter side to size * 256 / 224.
    assert load_model("resnet18", input_size=(112, 112)).preprocessing.resize_shorter == 128


def test_face_form_replaces_the_last_linear_layer():
    lm = load_model("resnet18", num_classes=7)
    assert lm.embedding == "fc.embedding"
    assert _out(lm.module).shape == (2, 7)
    assert (
        isinstance(lm.module.fc.classifier, nn.Linear) and lm.module.fc.embedding.linear.out_features == 512
    )
    mobile = load_model("mobilenet_v2", num_classes=3)
    assert mobile.embedding == "classifier.1.embedding" and _out(mobile.module).shape == (2, 3)
    with pytest.raises(FaceprobeError, match="without a classifier"):
        load_model("iresnet18", num_classes=3)


def test_import_path_factory():
    lm = load_model("torchvision.models:resnet18", num_classes=5)
    assert _out(lm.module).shape == (2, 5) and lm.preprocessing.input_size == (224, 224)
    with pytest.raises(FaceprobeError, match=r"cannot find the package 'nowhere' of 'nowhere\.at_all:net'"):
        load_model("nowhere.at_all:net")
    with pytest.raises(FaceprobeError, match=r"standard-library callable"):
        load_model("builtins:dict")
    with pytest.raises(FaceprobeError, match=r"not a torch nn\.Module"):
        load_model("torchvision.models:list_models")


def test_checkpoint_with_module_prefix_in_net_state_dict_loads(tmp_path):
    source = load_model("resnet18", seed=3).module
    wrapped = {"epoch": 7, "net_state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    lm = load_model("resnet18", f"checkpoint:{tmp_path / 'ckpt.pth'}")
    assert lm.digest == load_model("resnet18", seed=3).digest
    assert torch.equal(_out(lm.module), _out(source))
    save_file({f"backbone.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    assert load_model("resnet18", f"checkpoint:{tmp_path / 'w.safetensors'}").digest == lm.digest


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(FaceprobeError, match="refuses") as err:
        load_model("resnet18", f"checkpoint:{tmp_path / 'evil.pt'}")
    assert not marker.exists() and "\n" not in str(err.value)
    (tmp_path / "broken.pth").write_bytes(b"not a zip")
    with pytest.raises(FaceprobeError, match=r"broken\.pth"):
        load_model("resnet18", f"checkpoint:{tmp_path / 'broken.pth'}")
    with pytest.raises(FaceprobeError, match="not found"):
        load_model("resnet18", f"checkpoint:{tmp_path / 'absent.pt'}")


def test_mismatched_checkpoint_reports_keys_and_non_strict_loads_the_rest(tmp_path):
    state = load_model("resnet18", seed=4).module.state_dict()
    state["head.weight"] = state.pop("fc.weight")
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    weights = f"checkpoint:{tmp_path / 'bad.pt'}"
    with pytest.raises(FaceprobeError) as err:
        load_model("resnet18", weights)
    message = str(err.value)
    assert "1 missing (fc.weight)" in message and "1 unexpected (head.weight)" in message
    assert "conv1.weight (8, 3, 3, 3) != (64, 3, 7, 7)" in message and "--non-strict" in message
    with pytest.warns(UserWarning, match="non-strict"):
        lm = load_model("resnet18", weights, strict=False)
    assert torch.equal(lm.module.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    with pytest.raises(FaceprobeError, match="random, imagenet or checkpoint:PATH"):
        load_model("resnet18", "pretrained")


def test_insightface_iresnet50_and_mobilefacenet_layouts_load_strictly(tmp_path):
    for arch, keys, size in [
        ("iresnet50", insightface_iresnet_keys((3, 4, 14, 3)), (112, 112)),
        ("mobilefacenet", mobilefacenet_keys(), (112, 112)),
        ("mobilefacenet", mobilefacenet_keys((7, 6)), (112, 96)),
    ]:
        state = random_state(keys)
        torch.save({"state_dict": state}, tmp_path / "wild.pth")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lm = load_model(arch, f"checkpoint:{tmp_path / 'wild.pth'}", input_size=size)
        own = lm.module.state_dict()
        assert own.keys() == state.keys()
        assert all(torch.equal(own[k], v) for k, v in state.items())
    for depth, layers in [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (100, (3, 13, 30, 3))]:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            built = ARCHITECTURES[f"iresnet{depth}"].builder(None, (112, 112)).state_dict()
        assert {k: tuple(v.shape) for k, v in built.items()} == insightface_iresnet_keys(layers)


def test_faceprobe_checkpoint_rebuilds_its_architecture_and_preprocessing(tmp_path):
    model = SmallFaceNet(4, embedding_dim=8, widths=(8, 16))
    prep = Preprocessing((48, 40), crop=(0, 10, 100, 120))
    meta = {
        "architecture": "small",
        "num_classes": 4,
        "model_kwargs": {"embedding_dim": 8, "widths": [8, 16]},
    }
    save_checkpoint(model, tmp_path, {**meta, "preprocessing": prep.to_dict()})
    lm = load_model("small", f"checkpoint:{tmp_path}")
    assert lm.preprocessing == prep and lm.name == f"small/{tmp_path.name}/s0"
    assert torch.equal(_out(lm.module), _out(model))
    assert load_model("small", f"checkpoint:{tmp_path}", mean=(0.1, 0.2, 0.3)).preprocessing.mean == (
        0.1,
        0.2,
        0.3,
    )
    with pytest.raises(FaceprobeError, match="holds a 'small' network, not 'resnet18'"):
        load_model("resnet18", f"checkpoint:{tmp_path}")
    save_checkpoint(model, tmp_path / "old", {**meta, "input_size": 64})  # the demo's form
    assert load_model("small", f"checkpoint:{tmp_path / 'old'}").preprocessing.resize_shorter == 73


def test_imagenet_weights_come_from_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = imagenet_path("resnet18")
    with pytest.raises(FaceprobeError, match=f"not found at {path}; faceprobe never downloads"):
        load_model("resnet18", "imagenet")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    assert torch.equal(_out(load_model("resnet18", "imagenet").module), _out(reference))
    face = load_model("resnet18", "imagenet", num_classes=6).module  # ImageNet backbone, new face head
    assert torch.equal(face.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert face.fc.classifier.out_features == 6
    with pytest.raises(FaceprobeError, match="no ImageNet weights"):
        load_model("iresnet18", "imagenet")


def test_preprocessing_crop_size_and_channels_reach_the_network_exactly():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)  # a CelebA-sized image
    lm = load_from_options(
        "mobilefacenet", "random", "112x96", "40,60,136,172", "0.5,0.4,0.3", "0.2,0.25,0.5", True
    )
    prep = lm.preprocessing
    assert prep.input_size == (112, 96) and prep.crop == (40, 60, 136, 172) and prep.bgr
    x = prep.transform()(Image.fromarray(pixels))
    crop = pixels[60:172, 40:136].astype(np.float32) / 255  # the box is 96x112: no resampling
    expected = ((crop - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5]).transpose(2, 0, 1)[::-1]
    np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-6)
    seen = {}
    lm.module.conv1.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        assert lm.module(x[None]).shape == (1, 128)
    assert torch.equal(seen["x"][0], x)
    assert json.loads(json.dumps(prep.to_dict())) == prep.to_dict()
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_preprocessing_errors():
    with pytest.raises(FaceprobeError, match="exceeds the 50x50 image"):
        Preprocessing((8, 8), crop=(0, 0, 60, 40)).transform()(Image.new("RGB", (50, 50)))
    with pytest.raises(FaceprobeError, match="LEFT < RIGHT"):
        Preprocessing((8, 8), crop=(10, 0, 5, 40))
    for flags, culprit in [
        (("112by96", None, None, None), "--input-size"),
        ((None, "1,2,3", None, None), "--crop"),
        ((None, "1,2,3.5,9", None, None), "whole pixels"),
        ((None, None, "0.5,0.5", None), "--mean"),
        ((None, None, None, "a,b,c"), "--std"),
    ]:
        with pytest.raises(FaceprobeError, match=culprit):
            load_from_options("small", "random", *flags)
    assert parse_size("112") == (112, 112)


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(FaceprobeError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(FaceprobeError, match="not available"):
            resolve_device("cuda")
    size = fit_batch_size(SmallFaceNet(3), (3, 32, 32), resolve_device("auto"))
    assert size == CPU_BATCH_SIZE or 1 <= size <= 512
