"""The offline end-to-end demo, as a user runs it: `faceprobe demo --quick`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from faceprobe.report.run import load_run
from faceprobe.report.tables import vip_correlations
from faceprobe.results import RESULT_COLUMNS, STABLE_COLUMNS
from faceprobe.run import load_config, read_table, run_study

# Loaded into the demo's interpreter through sitecustomize: any attempt to open a network connection is
# recorded and refused, so the test proves the demo runs offline.
_NO_NETWORK = """
import socket

_LOG = {log!r}


def _refuse(*args, **kwargs):
    with open(_LOG, "a") as f:
        f.write(repr(args[1:] if args else kwargs) + "\\n")
    raise OSError("network access attempted during an offline run")


socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


# The full protocol's VIP study on the demo's trained network. 600 validation images per attribute put
# chance +- 4 standard errors at 50 +- 8.2 points.
VIP_STUDY = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses", "Wearing_Hat"]
train = 400
val = 600

[[models]]
architecture = "small"
weights = ["checkpoint:{model}"]

[probe]
single_units = false
vip_study = 50

[run]
layers_per_unit = 8
device = "cpu"
"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    guard = tmp_path_factory.mktemp("guard")
    attempts = guard / "attempts.log"
    (guard / "sitecustomize.py").write_text(_NO_NETWORK.format(log=str(attempts)))
    paths = [str(guard), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not attempts.exists(), f"the demo tried to reach the network: {attempts.read_text()}"
    return out, proc


def test_demo_writes_results_with_the_stable_columns(demo_run):
    out, _ = demo_run
    results = pd.read_parquet(out / "results.parquet")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert set(STABLE_COLUMNS) <= set(results.columns)
    assert set(results["representation"]) == {"layer", "channels", "neurons"}
    assert results["accuracy"].notna().all()
    assert (results["split"] == "val").all()
    depths = results.drop_duplicates("layer").sort_values("depth")
    assert list(depths["depth"]) == list(range(len(depths))) and len(depths) >= 5
    assert (out / "accuracy_vs_depth.png").stat().st_size > 20_000


def test_planted_attributes_are_found_and_the_control_stays_at_chance(demo_run):
    out, _ = demo_run
    results = pd.read_parquet(out / "results.parquet")
    layer = results[results["representation"] == "layer"]
    best = layer.groupby("attribute")["accuracy"].max()
    assert best["Eyeglasses"] >= 0.95
    assert best["Wearing_Hat"] >= 0.95
    control = results[results["attribute"] == "Control_Random"]["accuracy"]
    assert control.between(0.45, 0.55).all(), control.describe()


def test_demo_trains_a_real_recognition_network(demo_run):
    out, proc = demo_run
    metadata = json.loads((out / "model" / "metadata.json").read_text())
    assert metadata["metrics"]["held_out_identity_accuracy"] >= 0.9
    assert "identity accuracy on held-out images" in proc.stdout
    assert "Eyeglasses" in proc.stdout and "Control_Random" in proc.stdout


def test_vip_study_on_the_trained_network_correlates_vip_with_accuracy_and_the_control_is_chance(
    demo_run, tmp_path
):
    out, _ = demo_run
    config = tmp_path / "vip.toml"
    config.write_text(VIP_STUDY.format(data=next(out.glob("data-*")), model=out / "model"))
    run_study(load_config(config), tmp_path / "run")
    results = read_table(tmp_path / "run", "results")
    table = vip_correlations(load_run(tmp_path / "run").table("vip_study"))
    each = table[table["layer"] != "all"].set_index(["source", "layer", "attribute"])
    cells = results[["model", "layer", "attribute"]].drop_duplicates()
    assert sorted(each.index) == sorted(cells.itertuples(index=False, name=None))
    width = results.drop_duplicates("layer").set_index("layer")["n_features"].clip(upper=50)
    assert (each["neurons"] == each.index.get_level_values("layer").map(width)).all()
    r = each["r(vip, accuracy)"]
    assert np.isfinite(r).all(), r
    control = results[results["attribute"] == "Control_Random"]
    assert len(control) == 3 * results["layer"].nunique() and (control["n_eval"] >= 400).all()
    off = (control["accuracy"] - 0.5).abs() > 4 * np.sqrt(0.25 / control["n_eval"])
    assert not off.any(), control[["layer", "representation", "accuracy"]]
    # Measured (seed 0, 2026-11-30): r 0.13-0.34 on the classifier logits, 0.58-0.86 on the block outputs;
    # positive everywhere, and 0.4 on the blocks leaves a margin of 0.18.
    planted = r.unstack("attribute")[["Eyeglasses", "Wearing_Hat"]].droplevel("source")
    assert (planted > 0).all().all(), planted
    blocks = results.loc[results["kind"] == "block", "layer"].unique()
    assert len(blocks) >= 3 and (planted.loc[blocks] >= 0.4).all().all(), planted
