"""The stream mode: layers held nowhere, each pass of their fits a forward pass through the network.

A layer's probes are the same whether its train rows are held in RAM, read from the activation store or
streamed (the passes cut rows into the same blocks whatever the source, so the sums run in the same order),
and the plan streams the widest stored layers when the stores would outgrow the disk budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, tiny_study
from faceprobe.extract.lockstep import fit_in_lockstep
from faceprobe.pls import fit_shared

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
    store = run_dir / "store"
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) if store.exists() else 0


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
