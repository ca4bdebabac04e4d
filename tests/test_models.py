"""SmallFaceNet, the model registry and safetensors checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from faceprobe.errors import FaceprobeError
from faceprobe.models import SmallFaceNet, build_model
from faceprobe.models.checkpoint import METADATA_FILE, WEIGHTS_FILE, load_checkpoint, save_checkpoint


def _trained_looking(model: nn.Module) -> nn.Module:
    """Non-default BN statistics and weights, so a round trip that dropped any buffer would show."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 48, 48))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("size", [32, 64, 112])
def test_small_face_net_shapes(size):
    model = SmallFaceNet(7, embedding_dim=24).eval()
    x = torch.randn(2, 3, size, size)
    assert model(x).shape == (2, 7)
    assert model.embed(x).shape == (2, 24)
    assert torch.equal(model.classifier(model.embed(x)), model(x))


def test_small_face_net_structure():
    model = _trained_looking(SmallFaceNet(5, widths=(8, 16, 24), blocks_per_stage=2))
    assert [name for name, _ in model.backbone.named_children()] == ["stem", "stage1", "stage2"]
    assert [len(stage) for stage in (model.backbone.stage1, model.backbone.stage2)] == [2, 2]
    block = model.backbone.stage1[0]
    x = torch.randn(2, 8, 16, 16)
    # The block output is relu(residual branch + shortcut), each a module of its own.
    assert torch.equal(block(x), torch.relu(block.residual(x) + block.shortcut(x)))
    assert isinstance(model.backbone.stage1[1].shortcut, nn.Identity)


def test_small_face_net_rejects_bad_config():
    with pytest.raises(FaceprobeError, match="widths"):
        SmallFaceNet(5, widths=(16,))


def test_build_model():
    model = build_model("small", 11, embedding_dim=16)
    assert isinstance(model, SmallFaceNet)
    assert model.classifier.out_features == 11
    with pytest.raises(
        FaceprobeError, match=r"unknown model 'resnet9000' \(did you mean .*\); choose one of: .*small"
    ):
        build_model("resnet9000", 3)


def test_checkpoint_round_trip(tmp_path):
    model = _trained_looking(SmallFaceNet(6, embedding_dim=32, widths=(8, 16, 32)))
    meta = {
        "architecture": "small",
        "num_classes": 6,
        "model_kwargs": {"embedding_dim": 32, "widths": [8, 16, 32]},
        "input_size": 48,
        "metrics": {"val_acc": 0.5},
        "seed": 3,
    }
    out = save_checkpoint(model, tmp_path / "ckpt", meta)
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_FILE, METADATA_FILE])

    x = torch.randn(3, 3, 48, 48)
    for where in (out, out / WEIGHTS_FILE, str(out / METADATA_FILE)):
        loaded, loaded_meta = load_checkpoint(where)
        assert loaded_meta == meta
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
            assert torch.equal(a, b), name


def test_checkpoint_defaults_model_kwargs(tmp_path):
    save_checkpoint(SmallFaceNet(3), tmp_path, {"architecture": "small", "num_classes": 3})
    model, meta = load_checkpoint(tmp_path)
    assert meta["model_kwargs"] == {}
    assert isinstance(model, SmallFaceNet)


def test_checkpoint_errors(tmp_path):
    model = SmallFaceNet(3)
    with pytest.raises(FaceprobeError, match="lacks 'architecture'"):
        save_checkpoint(model, tmp_path, {"num_classes": 3})
    with pytest.raises(FaceprobeError, match="'nope' is not a known model"):
        save_checkpoint(model, tmp_path, {"architecture": "nope", "num_classes": 3})
    with pytest.raises(FaceprobeError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "old.pt").write_bytes(b"\x80")
    with pytest.raises(FaceprobeError, match="pickle"):
        load_checkpoint(tmp_path / "old.pt")

    save_checkpoint(model, tmp_path / "c", {"architecture": "small", "num_classes": 3})
    meta = json.loads((tmp_path / "c" / METADATA_FILE).read_text())
    (tmp_path / "c" / METADATA_FILE).write_text(json.dumps({**meta, "num_classes": 4}))
    with pytest.raises(FaceprobeError, match=r"does not fit.*classifier"):
        load_checkpoint(tmp_path / "c")
    (tmp_path / "c" / METADATA_FILE).write_text("{")
    with pytest.raises(FaceprobeError, match="not valid checkpoint metadata"):
        load_checkpoint(tmp_path / "c")
