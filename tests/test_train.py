"""Identity training on tiny tensors: it learns, is reproducible, resumes exactly, in mixed precision too;
margin heads; state."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from faceprobe.errors import FaceprobeError
from faceprobe.models import SmallFaceNet
from faceprobe.train import evaluate, train_recognition, train_transform
from faceprobe.train.heads import MarginHead
from faceprobe.train.loop import EpochSampler
from faceprobe.train.recognition import _identity_weights
from faceprobe.train.state import load_state, save_state

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


def _interrupt_at(epoch: int):
    def progress(event: dict) -> None:
        if event["event"] == "step" and event["epoch"] == epoch:
            raise KeyboardInterrupt

    return progress


def test_interrupted_run_resumes_with_identical_state(tmp_path):
    options = dict(epochs=2, lr=0.05, batch_size=16, uniform_identities=True, patience=0)
    straight = _model()
    expected = train_recognition(straight, _faces(), _faces(per_id=2, seed=1), **options)

    with pytest.raises(KeyboardInterrupt):
        train_recognition(
            _model(),
            _faces(),
            _faces(per_id=2, seed=1),
            state_dir=tmp_path,
            progress=_interrupt_at(2),
            **options,
        )
    assert len(load_state(tmp_path)[1]["history"]) == 1  # the state of the last finished epoch
    fresh = _model(seed=99)  # as in a new process: other weights until the state is loaded
    result = train_recognition(fresh, _faces(), _faces(per_id=2, seed=1), state_dir=tmp_path, **options)
    assert result.history == expected.history
    a, b = straight.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_other_settings_is_refused(tmp_path):
    train_recognition(_model(), _subset(16), None, epochs=1, batch_size=16, state_dir=tmp_path)
    with pytest.raises(FaceprobeError, match="delete that folder"):
        train_recognition(_model(), _subset(16), None, epochs=2, batch_size=8, state_dir=tmp_path)


def test_keep_best_restores_the_best_scoring_epoch():
    scores, weights = iter([0.2, 0.9, 0.5]), {}
    model = _model()

    def remember(event: dict) -> None:
        if event["event"] == "epoch":
            weights[event["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = train_recognition(
        model, _subset(32), _faces(per_id=1), epochs=3, batch_size=16, keep_best=True,
        score=lambda _: next(scores), progress=remember,
    )  # fmt: skip
    assert result.best_epoch == 2 and [r["score"] for r in result.history] == [0.2, 0.9, 0.5]
    assert result.val_acc == result.history[1]["val_acc"]
    assert all(torch.equal(v, weights[2][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("amp", "dtype"), [(False, torch.float32), (True, torch.bfloat16)])
def test_mixed_precision_trains_in_bfloat16_on_the_cpu(amp, dtype):
    model = _model()
    seen = set()  # dtypes of the first convolution's outputs in training steps (evaluation is float32)
    model.backbone.stem[0].register_forward_hook(
        lambda m, _, out: seen.add(out.dtype) if m.training else None
    )
    result = train_recognition(
        model, _faces(), _faces(per_id=4, seed=1), epochs=4, lr=0.05, batch_size=16, amp=amp
    )
    assert seen == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert result.history[-1]["loss"] < result.history[0]["loss"] and result.val_acc >= 0.75


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_heads_learn_and_fold_into_a_plain_classifier(kind):
    model = _model()
    result = train_recognition(
        model, _faces(), _faces(per_id=4, seed=1), epochs=4, lr=0.05, batch_size=16, head=kind, scale=16
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # Folded: unit-norm class weights and no bias, so the bare model ranks identities by cosine.
    assert torch.allclose(model.classifier.weight.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not model.classifier.bias.any() and not model.classifier._forward_hooks
    assert evaluate(model, _faces(per_id=4, seed=1)) == result.val_acc >= 0.5  # chance: 0.25


def test_margin_head_logits():
    features, weight = torch.randn(5, 8), torch.randn(3, 8)
    targets = torch.tensor([0, 1, 2, 0, 1])
    cos = torch.nn.functional.normalize(features) @ torch.nn.functional.normalize(weight).T
    theta = cos.gather(1, targets[:, None]).acos()
    cosface = MarginHead("cosface", scale=10, margin=0.3)(features, weight, targets)
    arcface = MarginHead("arcface", scale=10, margin=0.1)(features, weight, targets)
    assert torch.allclose(cosface.gather(1, targets[:, None]), 10 * (theta.cos() - 0.3), atol=1e-5)
    assert torch.allclose(arcface.gather(1, targets[:, None]), 10 * (theta + 0.1).cos(), atol=1e-5)
    others = torch.ones_like(cos, dtype=torch.bool).scatter(1, targets[:, None], False)
    assert torch.allclose(arcface[others], 10 * cos[others], atol=1e-5)
    assert torch.allclose(MarginHead("arcface", scale=10)(features, weight), 10 * cos, atol=1e-5)
    with pytest.raises(FaceprobeError, match="arcface or cosface"):
        MarginHead("sphereface")  # type: ignore[arg-type]


def test_uniform_identities_and_ddp_shards():
    weights = _identity_weights(TensorDataset(torch.zeros(100), torch.tensor([0] * 90 + [1] * 10)))
    drawn = torch.tensor(list(EpochSampler(100, weights, seed=0))) >= 90
    assert 0.35 < drawn.float().mean() < 0.65  # identity 1 has 10% of the images but half the draws
    shards = [list(EpochSampler(11, None, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])
    with pytest.raises(FaceprobeError, match=r"\.targets"):
        _identity_weights(_Plain())


class _Plain(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2


def test_state_round_trips(tmp_path):
    tensors = {"model": {"w": torch.arange(3.0)}, "optimizer": {"0.momentum_buffer": None}}
    save_state(tmp_path / "last", tensors, {"epoch": 4, "best_value": float("-inf")})
    save_state(tmp_path / "last", tensors, {"epoch": 5, "best_value": 0.5})  # replaces the folder
    groups, info = load_state(tmp_path / "last")
    assert info == {"epoch": 5, "best_value": 0.5}
    assert torch.equal(groups["model"]["w"], torch.arange(3.0)) and groups["optimizer"] == {
        "0.momentum_buffer": None
    }
    assert load_state(tmp_path / "nothing") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
