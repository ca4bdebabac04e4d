"""The working memory of a layer's PLS: counted by the plan, bounded by its budget, and given to the fit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from faceprobe.pls import target_state_bytes
from faceprobe.run.config import parse_config
from faceprobe.run.cost import unit_costs
from faceprobe.run.work import Draws
from faceprobe.studies import layerwise
from faceprobe.studies.layerwise import AttributeRows

GIB = 2**30
WIDTH = 802_816  # ResNet-50's conv1 at 224 x 224
CHANNEL = 112 * 112  # its neurons per channel


def _plan(
    memory_gb: float,
    mode: str = "auto",
    attributes: int = 40,
    train: int = 2048,
    layers: int = 1,
    top_k: int = 8,
):
    """One unit of ``layers`` layers as wide as ResNet-50's conv1 at 224 x 224 (64 channels of 112 x 112),
    ``attributes`` sharing their fits."""
    names = [f"A{i}" for i in range(attributes)]
    config = parse_config(
        {
            "data": {"spec": "synthetic:faces", "attributes": names},
            "models": [{"architecture": "small"}],
            "run": {"memory_gb": memory_gb, "mode": mode},
            "probe": {"top_k": top_k},
        },
        "test",
    )
    unit = SimpleNamespace(
        id="u",
        layers=tuple(f"conv{i}" for i in range(1, layers + 1)),
        features=(WIDTH,) * layers,
        channel_features=(CHANNEL,) * layers,
        cuts=frozenset(),
        ablated=None,
        after=(),
        model=SimpleNamespace(label="m"),
    )
    draws = SimpleNamespace(
        attributes=names,
        train_images=lambda attributes=None: [str(i) for i in range(train)],
        evaluation_images=lambda attributes, outside: [],
        unit_rows=lambda held: dict.fromkeys(names, train),
    )
    (cost,) = unit_costs([unit], draws, config)
    need = attributes * target_state_bytes(train, WIDTH, config.probe.components)
    return cost, need


def test_the_plan_counts_every_attributes_fit_state_when_the_budget_holds_it():
    cost, need = _plan(memory_gb=64)
    assert cost.held == "ram" and cost.fit_bytes == need > 3.5 * GIB
    assert cost.ram_bytes >= 2048 * WIDTH * 4 + need  # the layer's rows and the fit's state


def test_rows_that_fit_the_budget_but_not_beside_their_fits_state_go_to_the_store():
    cost, need = _plan(memory_gb=8)  # 6.1 GiB of rows, 3.7 GiB of fit state
    assert cost.held == "store" and cost.fit_bytes == need


@pytest.mark.parametrize("memory_gb", [4, 0.5])
def test_a_fit_gets_half_the_budget_never_below_one_gib(memory_gb):
    """The layer is on disk, so its size says nothing of the memory its fit may take: the budget does."""
    cost, need = _plan(memory_gb)
    assert cost.held == "store"
    assert cost.fit_bytes == max(GIB, memory_gb * GIB // 2) < need  # the attributes then fit in groups
    assert cost.ram_bytes >= cost.fit_bytes


@pytest.mark.parametrize("mode", ["ram", "store", "stream"])
def test_the_fits_budget_is_the_same_wherever_the_layers_are(mode):
    """Attributes are then fitted in the same groups, so every place gives the same values."""
    assert _plan(memory_gb=4, mode=mode)[0].fit_bytes == 2 * GIB


def test_streamed_layers_fit_at_once_so_the_plan_counts_each_ones_fit_state():
    """Held layers are fitted one after another; streamed ones together, in lockstep, each in the budget
    a held layer gets (the same groups, the same values): the plan counts the memory of all of them."""
    for mode, at_once in (("store", 1), ("stream", 3)):
        (small, need), (large, _) = (_plan(memory_gb, mode=mode, layers=3) for memory_gb in (4, 8))
        assert small.fit_bytes == 2 * GIB and large.fit_bytes == need  # 3.7 GiB: all 40 attributes at once
        assert len(small.streamed) == len(large.streamed) == (3 if mode == "stream" else 0)
        # nothing else in the unit's memory depends on the budget
        assert large.ram_bytes - small.ram_bytes == at_once * (need - 2 * GIB)


def test_the_plan_counts_the_unit_matrices_of_every_attribute_being_fitted():
    """Each attribute's picks (its top-k channels, k x a channel's neurons; its top-k neurons; the VIP
    study's) on its train and evaluation rows: held by each fitting thread, with the copy its channel PLS
    reads, by the next attribute's, and by the read of a stored layer they come from."""
    (eight, _), (one, _) = (_plan(memory_gb=64, top_k=k) for k in (8, 1))
    per_attribute = 2048 * (7 * CHANNEL + 7) * 4  # the draw has no evaluation rows here
    assert eight.ram_bytes - one.ram_bytes == layerwise.unit_matrices_at_once() * per_attribute
    assert layerwise.unit_matrices_at_once() >= 4  # two threads' matrices, doubled, at the least


def test_the_layer_pls_is_given_the_plans_budget(monkeypatch):
    given = []
    fit = layerwise.fit_transform_shared

    def spy(*args, max_bytes=None, **kwargs):
        given.append(max_bytes)
        return fit(*args, max_bytes=max_bytes, **kwargs)

    monkeypatch.setattr(layerwise, "fit_transform_shared", spy)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 24)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    rows = {"A": AttributeRows(np.arange(40), np.arange(40, 60), y[:40], y[40:])}
    layerwise.fit_layer(X, (24,), rows, k=2, n_components=2, max_bytes=12345)
    assert given == [12345]


def test_unit_rows_are_each_attributes_train_images_and_its_evaluation_images_among_the_held():
    """Counted in one pass over the draws' table, as the per-attribute definition gives them: an image in
    a validation draw and among the test images counts once."""
    rng = np.random.default_rng(0)
    pool = np.array([f"{i:04d}.jpg" for i in range(400)])
    parts = [pd.DataFrame({"image_id": pool[350:], "attribute": "*", "split": "test"})]
    for a in ("A", "B", "C"):
        drawn = rng.choice(400, 120, replace=False)
        parts.append(
            pd.DataFrame({"image_id": pool[drawn], "attribute": a, "split": ["train"] * 40 + ["val"] * 80})
        )
    draws = Draws(pd.concat(parts, ignore_index=True).astype({"attribute": "string"}), pd.DataFrame())
    held = draws.train_images()
    expected = {
        a: len(draws.train_images([a])) + len(set(draws.evaluation_images([a], ())) & set(held))
        for a in draws.attributes
    }
    assert draws.unit_rows(held) == expected
    assert draws.unit_rows([]) == {a: 40 for a in draws.attributes}
