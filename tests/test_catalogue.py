"""The layer catalogue: every probe-able output in execution order, what each name means, and selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from conftest import as_extracted
from faceprobe.cli import app
from faceprobe.errors import FaceprobeError
from faceprobe.extract import block_layers, catalogue, extract, select_layers
from faceprobe.models import SmallFaceNet, load_model


def _randomised_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN, so a residual output and the block output differ visibly."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_resnet50_lists_residual_and_post_skip_outputs_for_every_bottleneck():
    model = torchvision.models.resnet50(weights=None)
    layers = catalogue(model, torch.zeros(1, 3, 32, 32))
    names = [info.name for info in layers]
    blocks = [info.name for info in layers if info.kind == "block"]
    assert len(blocks) == 16 and blocks[0] == "layer1.0" and blocks[-1] == "layer4.2"
    for block in blocks:  # the branch before the add comes before the block's post-skip output
        assert names.index(f"{block}.bn3") < names.index(block)
        assert layers[names.index(f"{block}.bn3")].kind == "residual"
    assert "layer1.0.relu" not in names  # one ReLU module runs three times per bottleneck
    assert [info.depth for info in layers] == list(range(len(layers)))
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"] and names[-2:] == ["avgpool", "fc"]


@pytest.mark.parametrize("block_type", ["basic", "bottleneck"])
def test_residual_and_post_skip_captures_equal_a_manual_forward(block_type):
    model = _randomised_bn(
        torchvision.models.resnet18(weights=None)
        if block_type == "basic"
        else torchvision.models.resnet50(weights=None)
    )
    end = "bn2" if block_type == "basic" else "bn3"
    x = torch.randn(2, 3, 32, 32)
    acts = extract(model, x, [f"layer2.0.{end}", "layer2.0"])
    with torch.no_grad(), as_extracted(model) as layout:
        h = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(layout(x))))))
        block = model.layer2[0]
        if block_type == "basic":
            branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h)))))
        else:
            branch = block.bn3(
                block.conv3(torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h)))))))
            )
        post = torch.relu(branch + block.downsample(h))
    np.testing.assert_array_equal(acts[f"layer2.0.{end}"], branch.flatten(1).numpy())
    np.testing.assert_array_equal(acts["layer2.0"], post.flatten(1).numpy())
    assert (acts[f"layer2.0.{end}"] < 0).any()  # not overwritten by the in-place add and ReLU


def test_face_backbones_mark_blocks_and_end_in_the_embedding():
    iresnet = load_model("iresnet18", input_size=(32, 32)).module
    layers = catalogue(iresnet, torch.zeros(1, 3, 32, 32))
    kinds = {info.name: info.kind for info in layers}
    assert kinds["layer1.0.bn3"] == "residual" and kinds["layer1.0"] == "block" and kinds["prelu"] == "relu"
    assert sum(k == "block" for k in kinds.values()) == 8 and "dropout" not in kinds
    assert (layers[-1].name, layers[-1].kind, layers[-1].shape) == ("features", "embedding", (512,))
    x = torch.randn(2, 3, 32, 32)
    acts = extract(iresnet, x, ["layer1.1.bn3", "layer1.1"])
    block = iresnet.layer1[1]
    h = extract(iresnet, x, ["layer1.0"])["layer1.0"].reshape(2, 64, 16, 16)
    with torch.no_grad(), as_extracted(iresnet) as layout:
        branch = block.bn3(
            block.conv2(block.prelu(block.bn2(block.conv1(block.bn1(layout(torch.from_numpy(h)))))))
        )
    np.testing.assert_array_equal(acts["layer1.1.bn3"], branch.flatten(1).numpy())
    np.testing.assert_allclose(acts["layer1.1"], acts["layer1.1.bn3"] + h.reshape(2, -1), rtol=0, atol=1e-6)

    mobile = catalogue(load_model("mobilefacenet", input_size=(32, 32)).module, torch.zeros(1, 3, 32, 32))
    kinds = {info.name: info.kind for info in mobile}
    assert kinds["conv_3.model.0.project"] == "residual" and kinds["conv_3.model.0"] == "block"
    assert kinds["conv_23"] == "other" and "conv_23.project" in kinds and kinds["conv_23.project"] == "conv"
    assert sum(k == "block" for k in kinds.values()) == 12 and (mobile[-1].name, mobile[-1].kind) == (
        "bn",
        "embedding",
    )


def test_select_layers():
    model = SmallFaceNet(5, embedding_dim=8, widths=(8, 16, 24), blocks_per_stage=2)
    example = torch.zeros(1, 3, 32, 32)
    layers = catalogue(model, example)
    assert select_layers(layers, "all") == layers
    assert [i.name for i in select_layers(layers, "auto")] == [i.name for i in block_layers(model, example)]
    picked = select_layers(layers, "classifier, backbone.stage*.?.residual,backbone.stem")
    assert [i.name for i in picked] == [
        "backbone.stem",
        "backbone.stage1.0.residual",
        "backbone.stage1.1.residual",
        "backbone.stage2.0.residual",
        "backbone.stage2.1.residual",
        "classifier",
    ]  # catalogue order, whatever the order asked
    with pytest.raises(
        FaceprobeError, match=r"no probe-able layer 'backbone\.stage1\.3'; did you mean 'backbone\.stage1\.1'"
    ):
        select_layers(layers, "backbone.stage1.3")
    with pytest.raises(FaceprobeError, match=r"pattern 'layer\*' matches no layer"):
        select_layers(layers, "layer*")
    with pytest.raises(FaceprobeError, match="no layers selected"):
        select_layers(layers, " , ")
    resnet = torchvision.models.resnet18(weights=None)
    assert [i.name for i in select_layers(catalogue(resnet, example), "auto")] == [
        i.name for i in block_layers(resnet, example)
    ]


def test_layers_command_json_and_errors():
    result = CliRunner().invoke(app, ["layers", "resnet50", "--format", "json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    kinds = [row["kind"] for row in listing["layers"]]
    assert kinds.count("block") == 16 and kinds.count("residual") == 16
    first = next(row for row in listing["layers"] if row["name"] == "layer1.0")
    assert first == {
        "name": "layer1.0",
        "depth": 12,  # conv1, bn1, relu, maxpool, then the 8 layers inside the block
        "kind": "block",
        "shape": [256, 56, 56],
        "features": 802816,
    }
    assert listing["model"] == "resnet50/random/s0" and len(listing["digest"]) == 64

    result = CliRunner().invoke(app, ["layers", "small", "--input-size", "32x40", "--select", "*.stage1.0"])
    assert result.exit_code == 0 and "backbone.stage1.0 " in result.stdout and "32x40" in result.stdout
    result = CliRunner().invoke(app, ["layers", "small", "--select", "stage9"])
    assert isinstance(result.exception, FaceprobeError) and "no probe-able layer 'stage9'" in str(
        result.exception
    )
