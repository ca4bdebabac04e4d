"""The offline end-to-end demo, as a user runs it: `faceprobe demo --quick`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from faceprobe.results import RESULT_COLUMNS, STABLE_COLUMNS

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
