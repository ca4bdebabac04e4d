"""Layer lists and hooked activations, checked against forwards computed by hand and by torch.fx."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from torchvision.models.feature_extraction import create_feature_extractor

from conftest import as_extracted
from faceprobe.errors import FaceprobeError
from faceprobe.extract import LayerInfo, block_layers, capture, describe_layers, extract
from faceprobe.models import SmallFaceNet

SMALL_BLOCKS = [
    ("backbone.stem", "conv", (8, 24, 24)),
    ("backbone.stage1.0", "block", (16, 12, 12)),
    ("backbone.stage1.1", "block", (16, 12, 12)),
    ("backbone.stage2.0", "block", (32, 6, 6)),
    ("backbone.stage2.1", "block", (32, 6, 6)),
    ("embedding", "embedding", (20,)),
    ("classifier", "fc", (5,)),
]


def _small() -> SmallFaceNet:
    torch.manual_seed(0)
    model = SmallFaceNet(5, embedding_dim=20, widths=(8, 16, 32), blocks_per_stage=2)
    with torch.no_grad():  # non-trivial BN, so eval-mode outputs differ from train-mode ones
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10)


class _Odd(nn.Module):
    """Registration order differs from execution order; one module is shared, one never runs."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(4, 3)
        self.early = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.shared = nn.ReLU()
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.late(self.shared(self.early[1](self.shared(self.early[0](x)))))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_block_layers_small_face_net():
    layers = block_layers(_small(), torch.zeros(1, 3, 48, 48))
    assert [(info.name, info.kind, info.shape) for info in layers] == SMALL_BLOCKS
    assert [info.depth for info in layers] == list(range(len(SMALL_BLOCKS)))
    assert layers[1].features == 16 * 12 * 12


def test_block_layers_resnet18_in_execution_order():
    layers = block_layers(_resnet18(), torch.zeros(2, 3, 64, 64))
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert [info.name for info in layers] == ["conv1", "bn1", "relu", "maxpool", *blocks, "avgpool", "fc"]
    assert [info.kind for info in layers] == ["conv", "bn", "relu", "pool", *["block"] * 8, "pool", "fc"]
    assert layers[4].shape == (64, 16, 16) and layers[-3].shape == (512, 2, 2)


def test_block_layers_orders_by_execution_and_skips_unused_and_shared():
    model = _Odd()
    layers = block_layers(model, torch.zeros(2, 4))
    assert [(info.name, info.depth, info.kind) for info in layers] == [
        ("early.0", 0, "fc"),
        ("early.1", 1, "fc"),
        ("late", 2, "fc"),
    ]  # in execution order; the shared ReLU and the unused layer are left out
    assert _no_hooks(model)


def test_describe_layers_kinds_and_order():
    infos = describe_layers(
        _small(),
        torch.zeros(1, 3, 32, 32),
        ["embedding.pool", "backbone.stage1.0.residual", "backbone.stage1.0.residual.relu"],
    )
    assert infos == [
        LayerInfo("backbone.stage1.0.residual.relu", 0, "relu", (16, 8, 8)),
        LayerInfo("backbone.stage1.0.residual", 1, "residual", (16, 8, 8)),
        LayerInfo("embedding.pool", 2, "pool", (32, 1, 1)),
    ]
    resnet = describe_layers(_resnet18(), torch.zeros(1, 3, 32, 32), ["layer2.0.bn2", "layer2.0.downsample"])
    assert [(i.name, i.kind) for i in resnet] == [
        ("layer2.0.bn2", "residual"),
        ("layer2.0.downsample", "other"),
    ]
    with pytest.raises(FaceprobeError, match="runs more than once"):
        describe_layers(_resnet18(), torch.zeros(1, 3, 32, 32), ["layer1.0.relu"])


def test_extract_matches_manual_forward():
    model = _small()
    x = torch.randn(7, 3, 48, 48)
    names = [name for name, _, _ in SMALL_BLOCKS]
    acts = extract(model, x, names)
    with torch.no_grad(), as_extracted(model) as layout:
        model.eval()
        b = model.backbone
        expected = {"backbone.stem": b.stem(layout(x))}
        expected["backbone.stage1.0"] = b.stage1[0](expected["backbone.stem"])
        expected["backbone.stage1.1"] = b.stage1[1](expected["backbone.stage1.0"])
        expected["backbone.stage2.0"] = b.stage2[0](expected["backbone.stage1.1"])
        expected["backbone.stage2.1"] = b.stage2[1](expected["backbone.stage2.0"])
        expected["embedding"] = model.embedding(expected["backbone.stage2.1"])
        expected["classifier"] = model.classifier(expected["embedding"])
    assert list(acts) == names
    for name, value in expected.items():
        assert acts[name].dtype == np.float32
        np.testing.assert_array_equal(acts[name], value.reshape(7, -1).numpy(), err_msg=name)


def test_extract_matches_torch_fx_on_resnet18():
    model = _resnet18().eval()
    x = torch.randn(5, 3, 64, 64)
    names = ["layer1.0", "layer2.1", "layer4.1", "avgpool", "fc"]
    with torch.no_grad(), as_extracted(model) as layout:
        expected = create_feature_extractor(model, return_nodes=names)(layout(x))
    acts = extract(model, x, names)
    for name in names:
        np.testing.assert_array_equal(acts[name], expected[name].flatten(1).numpy(), err_msg=name)


def test_cpu_passes_run_channels_last_and_leave_the_model_as_it_came():
    """On the CPU the convolutions see channels-last tensors (faster kernels); the outputs equal a
    contiguous forward's up to rounding, still flattened in C, H, W order, and every weight gets its own
    memory format back."""
    model = _resnet18().eval()
    model.layer2[0].conv1.weight.data = model.layer2[0].conv1.weight.data.contiguous(
        memory_format=torch.channels_last
    )  # a caller's own choice, kept
    formats = {name: t.is_contiguous() for name, t in model.state_dict().items()}
    seen = []
    model.conv1.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(4, 3, 64, 64)
    acts = extract(model, x, ["layer1.0", "fc"])
    assert seen == [False, True]  # the dry forward of one image, then the pass
    with torch.no_grad():
        expected = create_feature_extractor(model, return_nodes=["layer1.0", "fc"])(x)
    for name in ("layer1.0", "fc"):
        np.testing.assert_allclose(acts[name], expected[name].flatten(1).numpy(), rtol=1e-4, atol=1e-5)
    assert {name: t.is_contiguous() for name, t in model.state_dict().items()} == formats
    assert not formats["layer2.0.conv1.weight"]


def test_inplace_relu_does_not_corrupt_captures():
    # resnet's bn1 output is overwritten by the in-place ReLU that follows it.
    model = _resnet18().eval()
    block = model.layer1[0]
    x = torch.randn(3, 3, 32, 32)
    acts = extract(model, x, ["layer1.0.bn1", "layer1.0.conv2"])
    with torch.no_grad(), as_extracted(model) as layout:
        block_in = model.maxpool(model.relu(model.bn1(model.conv1(layout(x)))))
        bn1 = block.bn1(block.conv1(block_in))
        conv2 = block.conv2(torch.relu(bn1))
    assert (acts["layer1.0.bn1"] < 0).any()
    np.testing.assert_array_equal(acts["layer1.0.bn1"], bn1.flatten(1).numpy())
    np.testing.assert_array_equal(acts["layer1.0.conv2"], conv2.flatten(1).numpy())


def test_extract_loader_progress_dtype_and_modes():
    model = _small()
    model.train()
    model.embedding.eval()  # a mixed mode must survive extraction
    x = torch.randn(10, 3, 32, 32)
    done = []
    loader = DataLoader(TensorDataset(x, torch.arange(10)), batch_size=4)
    acts = extract(model, loader, ["embedding"], dtype=np.float16, progress=done.append)
    assert done == [4, 4, 2]
    assert acts["embedding"].shape == (10, 20) and acts["embedding"].dtype == np.float16
    with torch.no_grad():
        model.eval()
        expected = model.embed(x).numpy().astype(np.float16)
    np.testing.assert_array_equal(acts["embedding"], expected)


def test_extract_modes_restored():
    model = _small()
    model.train()
    model.embedding.eval()
    extract(model, torch.randn(2, 3, 32, 32), ["embedding"])
    assert model.training and model.backbone.training and not model.embedding.training


def test_extract_drop_last_trims_and_replacement_sampler_fails():
    model = _small()
    data = TensorDataset(torch.randn(10, 3, 32, 32))
    acts = extract(model, DataLoader(data, batch_size=4, drop_last=True), ["classifier"])
    assert acts["classifier"].shape == (8, 5)
    oversampled = DataLoader(
        data, batch_size=4, sampler=RandomSampler(data, replacement=True, num_samples=12)
    )
    with pytest.raises(FaceprobeError, match="more than the 10 images"):
        extract(model, oversampled, ["classifier"])
    assert _no_hooks(model)


def test_extract_generator_of_batches():
    model = _small()
    x = torch.randn(6, 3, 32, 32)
    batches = [x[i : i + 2] for i in range(0, 6, 2)]
    acts = extract(model, iter(batches), ["embedding"])
    with torch.no_grad(), as_extracted(model) as layout:
        expected = torch.cat([model.eval().embed(layout(batch)) for batch in batches])
    np.testing.assert_array_equal(acts["embedding"], expected.numpy())


def test_unknown_layer_suggests_close_names():
    with pytest.raises(
        FaceprobeError, match=r"no layer 'backbone\.stage1\.2'; did you mean 'backbone\.stage1\.1'"
    ):
        extract(_small(), torch.randn(2, 3, 32, 32), ["backbone.stage1.2"])
    with pytest.raises(FaceprobeError, match=r"no layer 'layer1\.0\.bn3'; did you mean 'layer1\.0\.bn2'"):
        capture(_resnet18(), ["layer1.0.bn3"])


def test_extract_errors():
    model = _small()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(FaceprobeError, match="no layers"):
        extract(model, x, [])
    with pytest.raises(FaceprobeError, match="no images"):
        extract(model, [], ["embedding"])
    with pytest.raises(FaceprobeError, match="runs more than once"):
        extract(_resnet18(), torch.randn(2, 3, 32, 32), ["layer1.0.relu"])
    with pytest.raises(FaceprobeError, match=r"layer\(s\) 'unused' never run"):
        extract(_Odd(), torch.zeros(2, 4), ["late", "unused"])
    with pytest.raises(FaceprobeError, match="never run"):
        describe_layers(_Odd(), torch.zeros(2, 4), ["unused"])


def test_capture_keeps_copies_and_removes_hooks():
    model = _small().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture(model, ["backbone.stem", "embedding"]) as cap:
        logits = model(x)
        assert not _no_hooks(model)
    assert _no_hooks(model)
    with torch.no_grad():
        torch.testing.assert_close(cap.outputs["embedding"], model.embed(x), rtol=0, atol=0)
        torch.testing.assert_close(model.classifier(cap.outputs["embedding"]), logits, rtol=0, atol=0)
    assert cap.outputs["backbone.stem"].shape == (2, 8, 16, 16)


def test_hooks_removed_when_forward_raises():
    model = _small()
    with pytest.raises(RuntimeError), capture(model, ["backbone.stem"]):
        model(torch.randn(2, 5, 32, 32))  # wrong number of channels
    assert _no_hooks(model)
    with pytest.raises(RuntimeError):
        extract(model, torch.randn(2, 5, 32, 32), ["backbone.stem"])
    assert _no_hooks(model)
    assert model.training
    resnet = _resnet18()
    with pytest.raises(FaceprobeError, match="runs more than once"):  # raised inside a hook
        extract(resnet, torch.randn(1, 3, 32, 32), ["layer1.0.relu", "layer1.0"])
    assert _no_hooks(resnet) and resnet.training
