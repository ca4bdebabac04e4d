"""The study runner end to end: every study, resume after SIGKILL, Dask with a lost worker, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import UNITS_STUDY, tiny_study
from faceprobe.data.synth import generate
from faceprobe.run import load_config, read_table, run_status, run_study
from faceprobe.run.config import parse_config


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = generate(root / "faces", identities=12, images_per_identity=20, size=48, seed=0, workers=1)
    path = root / "study.toml"
    path.write_text(tiny_study(data, **UNITS_STUDY))
    return path


@pytest.fixture(scope="module")
def finished(study, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "reference"
    run_study(load_config(study), run_dir)
    return run_dir


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: read_table(run_dir, name) for name in ("results", "vip_study", "ablation")}


def _starts(run_dir: Path) -> list[str]:
    log = run_dir / "log.jsonl"
    if not log.exists():
        return []
    return [e["unit"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "start"]


def test_every_study_is_in_the_tables(finished):
    results = read_table(finished, "results")
    assert set(results["representation"]) == {"layer", "channels", "neurons", "channel", "neuron"}
    assert set(results["split"]) == {"val", "test"}
    assert set(results["attribute"]) == {"Eyeglasses", "Wearing_Hat", "Control_Random"}
    singles = results[results["representation"].isin(["channel", "neuron"])]
    assert (singles["unit"] >= 0).all() and (singles["k"] == 1).all()
    assert results["kind"].str.len().gt(0).all() and (results["architecture"] == "small").all()
    vip = read_table(finished, "vip_study")
    assert len(vip) > 0 and {"vip", "accuracy", "mean_positive"} <= set(vip.columns)
    ablation = read_table(finished, "ablation")
    assert set(ablation["fraction"]) == {0.1, 0.5}
    np.testing.assert_allclose(ablation["drop"], ablation["baseline_accuracy"] - ablation["accuracy"])
    assert (ablation["depth"] > ablation["ablated_depth"]).all()
    manifest = json.loads((finished / "manifest.json").read_text())
    assert manifest["data"]["n_test"] > 0 and manifest["versions"]["torch"]
    draws = pd.read_parquet(finished / "draws.parquet")
    test_ids = set(draws.loc[draws["split"] == "test", "image_id"])
    assert not test_ids & set(draws.loc[draws["split"] != "test", "image_id"])
    assert run_status(finished).complete


def test_same_config_gives_identical_tables(study, finished, tmp_path):
    again = tmp_path / "again"
    run_study(load_config(study), again)
    for name, table in _tables(finished).items():
        pd.testing.assert_frame_equal(table, _tables(again)[name], check_exact=True)


def test_rerun_of_a_finished_run_recomputes_nothing(study, finished):
    before = len(_starts(finished))
    run_study(load_config(study), finished)
    assert len(_starts(finished)) == before


def test_changed_config_in_the_same_folder_is_refused(study, finished):
    from faceprobe.errors import FaceprobeError

    raw = load_config(study).to_dict()
    raw["data"]["seed"] = 99
    with pytest.raises(FaceprobeError, match=r"data\.seed differ"):
        run_study(parse_config(raw), finished)


def test_sigkill_mid_run_then_resume_gives_identical_tables(study, finished, tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "faceprobe.cli", "run", str(study), "--out", str(run_dir)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = list((run_dir / "units").glob("*.done")) if (run_dir / "units").exists() else []
        if done:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = set(run_status(run_dir).finished)
    assert finished_before and run_status(run_dir).pending
    starts_before = _starts(run_dir)
    subprocess.run(command, check=True, capture_output=True)
    assert run_status(run_dir).complete
    restarted = _starts(run_dir)[len(starts_before) :]
    assert not set(restarted) & finished_before, "a finished unit was computed again"
    for name, table in _tables(finished).items():
        pd.testing.assert_frame_equal(table, _tables(run_dir)[name], check_exact=True)


def test_dask_with_a_worker_killed_mid_run_completes_with_the_same_tables(study, finished, tmp_path):
    from dask.distributed import LocalCluster

    run_dir = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        killed: list[int] = []

        def kill_a_worker() -> None:
            deadline = time.time() + 240
            while time.time() < deadline:
                starts = (
                    [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
                    if (run_dir / "log.jsonl").exists()
                    else []
                )
                live = [e["pid"] for e in starts if e["event"] == "start" and e["pid"] != os.getpid()]
                if live:
                    os.kill(live[0], signal.SIGKILL)
                    killed.append(live[0])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_a_worker)
        killer.start()
        run_study(load_config(study), run_dir, executor="dask", scheduler=cluster.scheduler_address)
        killer.join()
    assert killed, "no worker was killed"
    assert run_status(run_dir).complete
    for name, table in _tables(finished).items():
        pd.testing.assert_frame_equal(table, _tables(run_dir)[name], check_exact=True)


def test_probe_command_writes_results_and_manifest_and_resumes(study, tmp_path):
    data = study.parent / "faces"
    out = tmp_path / "probe"
    command = [
        sys.executable,
        "-m",
        "faceprobe.cli",
        "probe",
        "--model",
        "small",
        "--weights",
        "random",
        "--data",
        f"synthetic:{data}",
        "--attributes",
        "Eyeglasses",
        "--layers",
        "backbone.stage1.0,backbone.stage3.0",
        "--train",
        "40",
        "--val",
        "60",
        "--input-size",
        "32",
        "--vip-study",
        "0",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    results = read_table(out, "results")
    assert set(results["layer"]) == {"backbone.stage1.0", "backbone.stage3.0"}
    assert set(results["attribute"]) == {"Eyeglasses", "Control_Random"}
    assert json.loads((out / "manifest.json").read_text())["data"]["spec"] == f"synthetic:{data}"
    starts = len(_starts(out))
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(_starts(out)) == starts
    status = subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", "status", str(out)], capture_output=True, text=True
    )
    assert status.returncode == 0 and "finished" in status.stdout
