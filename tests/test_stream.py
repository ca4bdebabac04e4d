"""The stream mode: layers held nowhere, each pass of their fits a forward pass through the network.

A layer's probes are the same whether its train rows are held in RAM, read from the activation store or
streamed (the passes cut rows into the same blocks whatever the source, so the sums run in the same order),
and the plan streams the widest stored layers when the stores would outgrow the disk budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli, tiny_study
from faceprobe.errors import FaceprobeError
from faceprobe.extract.lockstep import PASS_BACKEND_ENV, fit_in_lockstep, rows_device
from faceprobe.pls import _HostMath, _RowBlocks, _TorchMath, fit_shared, transform_shared
from faceprobe.studies.layerwise import AttributeRows, fit_layer

#: The tiny study with every table the modes must agree on: results, the VIP study and the ablation.
STUDY = {
    "data": {"test": -1},
    "probe": {"single_units": True, "vip_study": 6},
    "ablation": {"depths": [2], "fractions": [0.1]},
}

TABLES = {
    "results.parquet": ["layer", "attribute", "representation", "unit", "split"],
    "vip_study.parquet": ["layer", "attribute", "neuron"],
    "ablation.parquet": ["layer", "attribute", "representation", "split", "fraction"],
}


def _store_bytes(run_dir) -> int:
    """The bytes in the run's store now, read while the run writes it: a chunk's temporary file may be
    renamed, or a folder removed, between listing and reading its size."""
    total = 0
    for folder, _, files in os.walk(run_dir / "store"):  # a folder gone while walked is skipped
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


@pytest.fixture(scope="module")
def placed(tiny_faces, tmp_path_factory):
    """The study run through the CLI held in RAM, stored, streamed, and placed by the plan under a disk
    budget a third of what storing needs; for the last, the most store seen on disk during the run."""
    from faceprobe.run import load_config
    from faceprobe.run.runner import study_costs

    root = tmp_path_factory.mktemp("stream")

    def study(**run: object) -> str:
        return tiny_study(tiny_faces, **STUDY, run={"keep_store": True, **run})

    whole = root / "whole.toml"
    whole.write_text(study(mode="store"))
    needed = sum(c.disk_bytes for c in study_costs(load_config(whole)) if "__ablate" not in c.unit)
    budget = needed // 3
    studies = {mode: study(mode=mode) for mode in ("ram", "store", "stream")}
    studies["auto"] = study(memory_gb=0, disk_gb=budget / 2**30)
    studies["stream_torch"] = studies["stream"]  # with the passes' math in torch (on the CPU here)
    runs, most = {}, 0
    for mode, text in studies.items():
        path = root / f"{mode}.toml"
        path.write_text(text)
        run_dir = root / mode
        proc = subprocess.Popen(
            [sys.executable, "-m", "faceprobe.cli", "run", str(path), "--out", str(run_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, PASS_BACKEND_ENV: "torch" if mode == "stream_torch" else ""},
        )
        while proc.poll() is None:
            if mode == "auto":
                most = max(most, _store_bytes(run_dir))
            time.sleep(0.02)
        assert proc.returncode == 0, proc.stderr
        runs[mode] = run_dir
    return runs, budget, needed, most, root


def _table(run_dir, name):
    frame = pd.read_parquet(run_dir / name)
    return frame.sort_values(TABLES[name]).reset_index(drop=True)


@pytest.mark.parametrize("mode", ["store", "stream", "auto"])
def test_held_stored_streamed_and_mixed_give_the_same_tables(placed, mode):
    runs = placed[0]
    for name in TABLES:
        held, other = _table(runs["ram"], name), _table(runs[mode], name)
        assert len(held) > 0, name
        pd.testing.assert_frame_equal(held, other, check_exact=True, obj=f"{name} ({mode})")


def test_the_plan_streams_the_widest_layers_when_the_store_outgrows_the_disk(placed):
    runs, budget, needed, most, root = placed
    plan = json.loads((runs["auto"] / "units" / "plan.json").read_text())
    probe = next(u for u in plan if "__layers" in u["id"])
    assert probe["held"] == "store"
    assert 0 < len(probe["streamed"]) < len(probe["layers"]), "a third of the disk: some layers each way"
    stream = json.loads((runs["stream"] / "units" / "plan.json").read_text())
    assert all(u["streamed"] == u["layers"] for u in stream)
    assert 0 < most <= budget < needed, (most, budget, needed)  # measured during the run
    proc = run_cli("plan", str(root / "auto.toml"), "--out", str(root / "never"), env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "store+stream" in proc.stdout and ": fits (" in proc.stdout and "layers streamed" in proc.stdout


def test_layers_before_the_deepest_streamed_one_stream_too():
    """The widest layer goes first; a narrower one before it rides on the same truncated forward passes,
    while the layers after it stay in the store."""
    from types import SimpleNamespace

    from faceprobe.run.cost import _stream_until_fits

    unit = SimpleNamespace(id="u", layers=("a", "b", "c", "d"), features=(10, 1000, 100, 10), ablated=None)
    config = SimpleNamespace(run=SimpleNamespace(store_dtype="float32"))
    disk = 4 * (10 + 100 + 10)  # one image: everything but the widest layer fits
    assert _stream_until_fits([unit], {"u": ("store", 1)}, config, disk) == {"u": ("a", "b")}
    assert _stream_until_fits([unit], {"u": ("store", 1)}, config, 4 * 1120) == {"u": ()}


def test_a_study_streamed_with_torch_passes_gives_the_numpy_streams_tables(placed):
    # The same accuracies, picks and drops; VIP (the one float the tables keep) to rounding: torch's
    # products round differently from BLAS's in the last bits.
    runs = placed[0]
    for name in TABLES:
        numpy_passes, torch_passes = _table(runs["stream"], name), _table(runs["stream_torch"], name)
        floats = ["vip"] if "vip" in numpy_passes else []
        pd.testing.assert_frame_equal(
            numpy_passes.drop(columns=floats), torch_passes.drop(columns=floats), check_exact=True
        )
        for column in floats:
            assert _relative(torch_passes[column].to_numpy(), numpy_passes[column].to_numpy()) < 1e-4


def test_streaming_stores_nothing(placed):
    runs = placed[0]
    assert _store_bytes(runs["stream"]) == 0
    assert _store_bytes(runs["store"]) > 0


# --- the lockstep coordinator ------------------------------------------------------------------------------


def _network(X: dict[str, np.ndarray], batch: int = 5):
    """A pass over fake layers (rows in batches), recording which layers each pass was asked for."""
    asked: list[list[str]] = []

    def run_pass(names, deliver):
        asked.append(list(names))
        n = len(next(iter(X.values())))
        for start in range(0, n, batch):
            for name in names:
                deliver(name, X[name][start : start + batch].copy())

    return run_pass, asked


def test_layers_fit_in_lockstep_with_one_forward_per_pass_of_the_slowest_fit():
    rng = np.random.default_rng(0)
    X = {"early": rng.normal(size=(40, 30)).astype(np.float32), "late": rng.normal(size=(40, 6))}
    X["late"] = X["late"].astype(np.float32)
    y = (X["early"][:, 0] > 0).astype(float)[:, None]
    run_pass, asked = _network(X)
    components = {"early": 4, "late": 1}
    fits = fit_in_lockstep(
        run_pass,
        {k: v.shape for k, v in X.items()},
        lambda name, layer: fit_shared(layer, y, None, components[name]),
    )
    assert asked == [["early", "late"], ["early", "late"], ["early"], ["early"], ["early"]]
    for name, (model,) in fits.items():
        (held,) = fit_shared(X[name], y, None, components[name])
        np.testing.assert_array_equal(model.x_weights_, held.x_weights_)


def _finishes(call, seconds=20):
    """Runs ``call`` in a thread; its exception, or a failure if it has not returned within ``seconds``."""
    out: list[BaseException | None] = []

    def target():
        try:
            call()
            out.append(None)
        except BaseException as error:
            out.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, "the coordinator hung"
    return out[0]


def test_a_failing_fit_stops_every_fit_and_is_raised():
    X = {name: np.ones((40, 8), dtype=np.float32) for name in ("a", "b")}
    run_pass, _ = _network(X, batch=1)

    def fit(name, layer):
        for i, _ in enumerate(layer.stream_rows()):
            if name == "a" and i == 3:
                raise ValueError("broken fit of a")
        list(layer.stream_rows())  # b asks for another pass, which never comes

    error = _finishes(lambda: fit_in_lockstep(run_pass, {n: (40, 8) for n in X}, fit))
    assert isinstance(error, ValueError) and "broken fit of a" in str(error)


def test_a_failing_forward_pass_stops_every_fit_and_is_raised():
    def run_pass(names, deliver):
        deliver(names[0], np.ones((2, 3), dtype=np.float32))
        raise RuntimeError("out of memory on the device")

    def fit(name, layer):
        return [rows.sum() for rows in layer.stream_rows()]

    error = _finishes(lambda: fit_in_lockstep(run_pass, {"a": (4, 3), "b": (4, 3)}, fit))
    assert isinstance(error, RuntimeError) and "out of memory" in str(error)


# --- where a streamed pass computes -------------------------------------------------------------------------


def _streamed(X: np.ndarray, fit, backend: str, monkeypatch, batch: int = 23):
    """``fit(layer)`` of X streamed in batches of torch tensors, the passes' math forced to ``backend``."""
    monkeypatch.setenv(PASS_BACKEND_ENV, backend)

    def run_pass(names, deliver):
        for start in range(0, len(X), batch):
            deliver(names[0], torch.from_numpy(X[start : start + batch]))

    def checked(name, layer):
        assert isinstance(_RowBlocks(layer, 2**20).math, _HostMath) == (backend != "torch")
        return fit(layer)

    return fit_in_lockstep(run_pass, {"layer": X.shape}, checked)["layer"]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def test_torch_passes_fit_a_streamed_layer_as_numpy_passes_do(monkeypatch):
    # Overlapping row masks on 16-row blocks: some blocks serve only some targets (the index_add path),
    # others all of them; the products may differ only in their rounding (tensors on the rows' device).
    rng = np.random.default_rng(4)
    n, m = 240, 70
    X = rng.normal(size=(n, m)).astype(np.float32)
    Y = np.stack([X[:, 0] + 0.3 * rng.normal(size=n) > 0, X[:, 5] - X[:, 6] > 0, X[:, 9] > 0], axis=1)
    masks = np.zeros((n, 3), dtype=bool)
    masks[:150, 0], masks[100:, 1], masks[::2, 2] = True, True, True

    def fit(layer):
        models = fit_shared(layer, Y.astype(float), masks, 5, block_bytes=1024)
        return models, transform_shared(layer, models, block_bytes=1024)

    (numpy_fits, numpy_scores), (torch_fits, torch_scores) = (
        _streamed(X, fit, backend, monkeypatch) for backend in ("numpy", "torch")
    )
    held = fit_shared(X, Y.astype(float), masks, 5, block_bytes=1024)
    for theirs, ours, in_ram in zip(numpy_fits, torch_fits, held, strict=True):
        np.testing.assert_array_equal(theirs.vip_, in_ram.vip_)  # the NumPy stream is the held fit
        assert ours.n_components_ == theirs.n_components_ == 5
        assert _relative(ours.vip_, theirs.vip_) < 1e-4
        for name in ("x_rotations_", "x_loadings_", "x_scores_", "x_mean_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(torch_scores, numpy_scores, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_layer_probed_with_torch_passes_scores_as_with_numpy_passes(monkeypatch):
    # Every pass of a layer's probes (the shared PLS, the picked units, the readouts) on torch blocks.
    # Accuracies are compared on a planted attribute whose classes stand far apart: a difference in the
    # last bits of a score could flip an image lying on a probe's boundary, which a random attribute has.
    rng = np.random.default_rng(5)
    n, shape = 200, (6, 3, 3)
    y = rng.integers(0, 2, n)
    X = np.maximum(rng.normal(size=(n, *shape)), 0).astype(np.float32)
    X[:, 2] += 3.0 * y[:, None, None]
    X = X.reshape(n, -1)
    noise = rng.integers(0, 2, n)
    rows = {
        "Planted": AttributeRows(np.arange(120), np.arange(120, n), y[:120], y[120:]),
        "Noise": AttributeRows(np.arange(30, 150), np.arange(150, n), noise[30:150], noise[150:]),
    }

    def probes(layer):
        return fit_layer(layer, shape, rows, k=3, n_components=4, single_units=True, vip_study=5).score()

    with_numpy, with_torch = (_streamed(X, probes, b, monkeypatch, batch=17) for b in ("numpy", "torch"))
    for attribute in rows:
        assert _relative(with_torch.vips[attribute], with_numpy.vips[attribute]) < 1e-4
    planted = [pd.DataFrame(p.rows).query("attribute == 'Planted'") for p in (with_numpy, with_torch)]
    pd.testing.assert_frame_equal(planted[0], planted[1])
    assert planted[0]["accuracy"].max() == 1.0


def test_streamed_batches_stay_on_the_networks_device(monkeypatch):
    # A meta tensor cannot be copied to the host: a batch that reached a fit was never brought there.
    monkeypatch.delenv(PASS_BACKEND_ENV, raising=False)

    def run_pass(names, deliver):
        for _ in range(3):
            deliver(names[0], torch.ones((4, 2, 3), dtype=torch.bfloat16, device="meta"))

    def fit(name, layer):
        math = _RowBlocks(layer, 2**20).math
        batches = [(type(rows), rows.device, rows.dtype, tuple(rows.shape)) for rows in layer.stream_rows()]
        return layer.rows_device, type(math), batches

    device, math, batches = fit_in_lockstep(run_pass, {"a": (12, 6)}, fit, device="meta")["a"]
    assert device == torch.device("meta") and math is _TorchMath
    assert batches == [(torch.Tensor, torch.device("meta"), torch.float32, (4, 6))] * 3


@pytest.mark.parametrize(
    ("backend", "kind"), [("", np.ndarray), ("numpy", np.ndarray), ("torch", torch.Tensor)]
)
def test_on_the_cpu_batches_are_numpy_unless_torch_is_asked_for(monkeypatch, backend, kind):
    X = np.arange(24, dtype=np.float32).reshape(6, 4)

    def fit(layer):
        return [(type(rows), np.asarray(rows).copy()) for rows in layer.stream_rows()]

    batches = _streamed(X, fit, backend, monkeypatch, batch=4)
    assert [type_ for type_, _ in batches] == [kind, kind]
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in batches]), X)
    assert rows_device("cpu") == (torch.device("cpu") if backend == "torch" else None)


def test_an_unknown_pass_backend_is_one_line(monkeypatch):
    monkeypatch.setenv(PASS_BACKEND_ENV, "jax")
    with pytest.raises(FaceprobeError, match="FACEPROBE_PASS_BACKEND='jax' is not a pass backend"):
        rows_device("cpu")


def test_the_plan_times_streamed_passes_where_their_rows_stay(tiny_faces, tmp_path, monkeypatch):
    """Calibrated with torch passes (what an accelerator runs), the plan measures a streamed pass's own
    rate and times only the streamed layers' fits at it; with host passes there is one rate."""
    import dataclasses

    from faceprobe.run import load_config
    from faceprobe.run.cost import calibrate, unit_costs
    from faceprobe.run.runner import _dataset, make_draws, plan_units

    path = tmp_path / "study.toml"
    path.write_text(tiny_study(tiny_faces, run={"mode": "stream"}))
    config = load_config(path)
    dataset = _dataset(config)
    units, draws = plan_units(config, dataset), make_draws(dataset, config)[0]
    assert calibrate(units, config, len(draws.attributes), tmp_path).stream_pass_bytes is None
    monkeypatch.setenv(PASS_BACKEND_ENV, "torch")
    rates = calibrate(units, config, len(draws.attributes), tmp_path)
    assert rates.stream_pass_bytes is not None and rates.stream_pass_bytes > 0

    def seconds(config, stream_pass_bytes):
        faster = dataclasses.replace(rates, stream_pass_bytes=stream_pass_bytes)
        return sum(cost.seconds for cost in unit_costs(units, draws, config, faster))

    base = seconds(config, rates.pass_bytes)
    assert seconds(config, rates.pass_bytes * 1e6) < base  # the streamed fits' share is gone
    held = dataclasses.replace(config, run=dataclasses.replace(config.run, mode="ram"))
    assert seconds(held, rates.pass_bytes) == seconds(held, rates.pass_bytes * 1e6)  # nothing streamed
