"""Identity training on tiny tensors: it learns and is reproducible; the transforms give the right shapes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from faceprobe.errors import FaceprobeError
from faceprobe.models import SmallFaceNet
from faceprobe.train import evaluate, train_recognition, train_transform

torch.set_num_threads(2)

WIDTHS = (8, 16, 32)


def _faces(per_id: int = 12, seed: int = 0, n_ids: int = 4, size: int = 32) -> TensorDataset:
    """Each identity a fixed random image, plus noise drawn from ``seed``: learnable within a few steps."""
    prototypes = torch.randn(n_ids, 3, size, size, generator=torch.Generator().manual_seed(1234))
    targets = torch.arange(n_ids).repeat_interleave(per_id)
    noise = torch.randn(len(targets), 3, size, size, generator=torch.Generator().manual_seed(seed))
    images = prototypes[targets] + 0.5 * noise
    return TensorDataset(images, targets)


def _subset(n: int) -> TensorDataset:
    images, targets = _faces().tensors
    return TensorDataset(images[:n], targets[:n])


def _model(seed: int = 0) -> SmallFaceNet:
    torch.manual_seed(seed)
    return SmallFaceNet(4, embedding_dim=16, widths=WIDTHS)


def test_training_lowers_the_loss_and_learns():
    events = []
    result = train_recognition(
        _model(), _faces(), _faces(per_id=4, seed=1), epochs=4, lr=0.05, batch_size=16, progress=events.append
    )
    losses = [r["loss"] for r in result.history]
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert losses[-1] < losses[0]
    assert result.val_acc == result.history[-1]["val_acc"] and result.val_acc >= 0.75
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 * 3 and steps[0]["steps"] == 3
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3, 4]


def test_seeded_runs_are_identical():
    def run(seed: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        model = _model()
        result = train_recognition(model, _faces(), None, epochs=2, batch_size=16, seed=seed)
        return result.history, model.state_dict()

    (h1, s1), (h2, s2), (h3, _) = run(0), run(0), run(1)
    assert h1 == h2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1 != h3  # another seed shuffles differently
    assert h1[0]["val_acc"] is None


def test_global_rng_is_left_alone():
    state = torch.random.get_rng_state()
    train_recognition(_model(), _subset(16), None, epochs=1, batch_size=16, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_plateau_cuts_the_learning_rate_tenfold():
    # lr 0 keeps the loss flat, so with patience 0 every epoch after the first cuts the rate.
    result = train_recognition(_model(), _subset(16), None, epochs=3, lr=1e-30, batch_size=16, patience=0)
    assert [r["lr"] for r in result.history] == pytest.approx([1e-30, 1e-31, 1e-32])


def test_last_batch_of_one_is_dropped():
    # 17 images in batches of 16 would leave a single image, which BatchNorm cannot train on.
    result = train_recognition(_model(), _subset(17), None, epochs=1, batch_size=16)
    assert result.history[0]["epoch"] == 1


def test_bad_arguments():
    with pytest.raises(FaceprobeError, match="epochs >= 1"):
        train_recognition(_model(), _faces(), None, epochs=0)


def test_evaluate_restores_mode():
    model = _model().train()
    acc = evaluate(model, _faces(per_id=2))
    assert 0 <= acc <= 1 and model.training


@pytest.mark.parametrize("size", [32, 112])
def test_train_transform(size):
    image = Image.new("RGB", (178, 218), (200, 100, 50))
    torch.manual_seed(0)
    faces = [train_transform(size)(image) for _ in range(100)]
    assert all(x.shape == (3, size, size) and x.dtype == torch.float32 for x in faces)
    colour = torch.tensor([200, 100, 50]) / 255 * 2 - 1  # normalised to [-1, 1]
    grays = [x for x in faces if not torch.allclose(x[:, 0, 0], colour, atol=1e-6)]
    assert 5 <= len(grays) <= 40  # about 20%, each still three (equal) channels
    assert all(torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]) for x in grays)
