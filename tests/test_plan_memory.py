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
    ablated: str | None = None,
):
    """One unit of ``layers`` layers as wide as ResNet-50's conv1 at 224 x 224 (64 channels of 112 x 112),
    ``attributes`` sharing their fits; with ``ablated``, the ablation unit of that layer."""
    names = [f"A{i}" for i in range(attributes)]
    study = {
        "data": {"spec": "synthetic:faces", "attributes": names},
        "models": [{"architecture": "small"}],
        "run": {"memory_gb": memory_gb, "mode": mode},
        "probe": {"top_k": top_k},
    }
    config = parse_config({**study, "ablation": {"depths": [ablated]}} if ablated else study, "test")
    unit = SimpleNamespace(
        id="u",
        layers=tuple(f"conv{i}" for i in range(1, layers + 1)),
        features=(WIDTH,) * layers,
        channel_features=(CHANNEL,) * layers,
        cuts=frozenset(),
        ablated=ablated,
        after=(),
        model=SimpleNamespace(label="m"),
    )
    draws = SimpleNamespace(
        attributes=names,
        train_images=lambda attributes=None: [str(i) for i in range(train)],
        evaluation_images=lambda attributes, outside: [],
        train_counts=lambda: dict.fromkeys(names, train),
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
    study's) on its train rows: held by each fitting thread, with the copy its channel PLS reads, by the
    next attribute's, and by the read of a stored layer they come from; and a batch of each attribute's
    evaluation rows, read out after the fits."""
    (eight, _), (one, _) = (_plan(memory_gb=64, top_k=k) for k in (8, 1))
    assert eight.fit_bytes == one.fit_bytes > 3 * GIB  # every attribute's layer PLS at once
    vip_study = 50  # the default sample of the VIP study
    matrices = {k: 2048 * (k * CHANNEL + k + vip_study) * 4 for k in (8, 1)}
    threads = {k: layerwise.unit_fit_threads(m, eight.fit_bytes) for k, m in matrices.items()}
    at_once = {k: layerwise.unit_matrices_at_once(t) for k, t in threads.items()}
    assert eight.ram_bytes - one.ram_bytes == at_once[8] * matrices[8] - at_once[1] * matrices[1]
    assert layerwise.unit_matrices_at_once(1) >= 4  # one thread's matrix, doubled, the next one, a read


def test_a_thesis_scale_layers_unit_matrices_stay_within_its_fits_budget():
    """On VGG16's conv1 at 224 x 224 (64 channels of 224 x 224) with 2048 train images, one attribute's
    top-8 channels are 3.3 GB: the unit probes are fitted on fewer threads, so that the matrices they
    hold at once fit in the budget the layer's fits are given."""
    matrix = 2048 * (8 * 224 * 224 + 8) * 4
    for budget in (4 * matrix, 6 * matrix, 64 * matrix):
        threads = layerwise.unit_fit_threads(matrix, budget)
        assert 1 <= threads <= layerwise.unit_fit_threads()
        assert layerwise.unit_matrices_at_once(threads) * matrix <= budget
    assert layerwise.unit_fit_threads(matrix, 4 * matrix) == 1
    assert layerwise.unit_fit_threads(matrix, 10**6) == 1  # one at the least: the plan then shows its RAM
    assert layerwise.unit_fit_threads(matrix) == layerwise.unit_fit_threads()  # no budget: one per CPU
    small = 64 * 2**20  # a small layer's budget is the least any fit gets, 1 GiB
    assert layerwise.unit_fit_threads(small, small) == layerwise.unit_fit_threads(small, GIB)


def test_fit_layer_fits_fewer_attributes_at_once_when_their_matrices_outgrow_its_budget(monkeypatch):
    """The budget a layer's fits are given also bounds its unit probes' threads, and the tables do not
    depend on them."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4 * 25)).astype(np.float32)
    rows = {}
    for name in "ABC":
        y = rng.integers(0, 2, 200)
        rows[name] = AttributeRows(np.arange(120), np.arange(120, 200), y[:120], y[120:])
    monkeypatch.setattr(layerwise, "usable_cpus", lambda: 4)
    monkeypatch.setattr(layerwise, "MIN_STATE_BYTES", 1)
    given = []
    pool = layerwise.ThreadPoolExecutor

    def spy(threads):
        given.append(threads)
        return pool(threads)

    monkeypatch.setattr(layerwise, "ThreadPoolExecutor", spy)
    matrix = 120 * (2 * 25 + 2) * 4
    tables = [
        pd.DataFrame(
            layerwise.fit_layer(X, (4, 5, 5), rows, k=2, n_components=2, max_bytes=budget).score().rows
        )
        for budget in (None, 6 * matrix)
    ]
    assert given == [4, 2]
    pd.testing.assert_frame_equal(*tables, check_exact=True)


def test_an_ablation_unit_is_planned_for_the_one_attribute_it_probes_at_a_time():
    """Its later layers are probed for one attribute at a time (thesis Table 5.4): its fits, their kept
    models and its unit matrices are one attribute's, however many the study has."""
    ablation, _ = _plan(memory_gb=64, ablated="conv0")
    one, _ = _plan(memory_gb=64, attributes=1)
    probe, _ = _plan(memory_gb=64)
    assert (ablation.ram_bytes, ablation.fit_bytes) == (one.ram_bytes, one.fit_bytes)
    assert probe.ram_bytes > ablation.ram_bytes + 4 * GIB  # 40 attributes' fits and models


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


def test_train_counts_are_each_attributes_train_images():
    """The rows of its unit matrices: its train draw, whatever else of its images the layer holds."""
    rng = np.random.default_rng(0)
    pool = np.array([f"{i:04d}.jpg" for i in range(400)])
    parts = [pd.DataFrame({"image_id": pool[350:], "attribute": "*", "split": "test"})]
    for a, size in (("A", 40), ("B", 25), ("C", 60)):
        drawn = rng.choice(400, size + 80, replace=False)
        parts.append(
            pd.DataFrame({"image_id": pool[drawn], "attribute": a, "split": ["train"] * size + ["val"] * 80})
        )
    draws = Draws(pd.concat(parts, ignore_index=True).astype({"attribute": "string"}), pd.DataFrame())
    assert draws.train_counts() == {a: len(draws.train_images([a])) for a in draws.attributes}
    assert draws.train_counts() == {"A": 40, "B": 25, "C": 60}
