"""Hostile studies and command lines: each ends in one line naming the file or key, never a traceback.

Issue 'Hardening II' cases about studies, run folders and executors, each through the real CLI; the data
and array cases are in test_hostile_inputs.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import assert_one_line_error, read_only, run_cli
from faceprobe.errors import FaceprobeError
from faceprobe.models.registry import build_model
from faceprobe.run import read_table

PROBE = ["probe", "--model", "small", "--input-size", "32", "--layers", "backbone.stage2.0"]


def _probe(data: Path, out: Path, *extra: str) -> list[str]:
    return [*PROBE, "--data", f"synthetic:{data}", "--out", str(out), "--train", "16", "--val", "16", *extra]


def test_a_named_one_class_attribute_is_refused(tiny_faces, tmp_path):
    proc = run_cli(*_probe(tiny_faces, tmp_path / "run", "--attributes", "Eyeglasses,Bald,Young"))
    assert_one_line_error(proc, "Bald has 0 positive", "Young has", "negative")
    assert not (tmp_path / "run").exists()


def test_one_class_attributes_of_all_are_left_out_and_said(tiny_faces, tmp_path):
    proc = run_cli(*_probe(tiny_faces, tmp_path / "run", "--attributes", "all", "--vip-study", "0"))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {"Bald", "Young"} <= set(manifest["data"]["dropped"])
    assert "Bald: left out" in " ".join(proc.stdout.split())
    assert "Bald" not in set(read_table(tmp_path / "run")["attribute"])


def test_a_run_whose_every_probe_fails_exits_2_and_keeps_its_rows(tiny_faces, tmp_path):
    state = build_model("small").state_dict()
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, tmp_path / "nan.safetensors")
    weights = f"checkpoint:{tmp_path / 'nan.safetensors'}"
    proc = run_cli(*_probe(tiny_faces, tmp_path / "run", "--attributes", "Eyeglasses", "--weights", weights))
    assert_one_line_error(proc, "no probe of", "Eyeglasses", "results.parquet")
    results = read_table(tmp_path / "run")
    assert len(results) and results["accuracy"].isna().all() and (results["note"] != "").all()


def test_partly_failed_probes_are_listed_at_the_end(tiny_faces, tmp_path):
    proc = run_cli(*_probe(tiny_faces, tmp_path / "run", "--attributes", "Eyeglasses", "--train", "4"))
    results = read_table(tmp_path / "run") if (tmp_path / "run" / "manifest.json").exists() else None
    if proc.returncode == 0:
        assert results is not None and results["accuracy"].isna().any()
        assert "probe rows without an accuracy" in " ".join(proc.stdout.split())
    else:
        assert_one_line_error(proc, "no probe of")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", ":"], "package.module:factory"),
        (["--input-size", "99999"], "larger than"),
        (["--model", "torchvision.models:get_model"], "no required arguments"),
    ],
)
def test_bad_model_flags_are_one_line(tiny_faces, tmp_path, args, says):
    command = _probe(tiny_faces, tmp_path / "run", "--attributes", "Eyeglasses")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        command[command.index(flag) + 1] = value
    assert_one_line_error(run_cli(*command), says)
    assert not (tmp_path / "run").exists(), "a failed validation leaves no folder behind"


def test_out_pointing_at_a_file_is_one_line_for_every_command(tiny_faces, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_one_line_error(run_cli(*_probe(tiny_faces, blocker, "--attributes", "Eyeglasses")), str(blocker))
    study = tmp_path / "study.toml"
    study.write_text(f'[data]\nspec = "synthetic:{tiny_faces}"\n[[models]]\narchitecture = "small"\n')
    assert_one_line_error(run_cli("run", str(study), "--out", str(blocker)), str(blocker))
    assert_one_line_error(run_cli("synth", "--out", str(blocker), "--identities", "2"), str(blocker))
    assert_one_line_error(run_cli("init", str(tmp_path / "study")), ".toml")
    assert_one_line_error(run_cli("run", str(tmp_path / "study.txt")), ".toml")


def _results_only_run(folder: Path) -> None:
    """A run folder holding just the tables a report reads."""
    from faceprobe.results import to_frame, write_results

    keys = {"model": "m", "layer": "l", "depth": 0, "attribute": "Eyeglasses", "representation": "layer"}
    rows = [{**keys, "k": 0, "split": "val", "accuracy": 0.75, "n_train": 8, "n_eval": 8}]
    write_results(to_frame(rows), folder / "results.parquet" / "part.parquet")


def _study(tiny_faces: Path, folder: Path) -> Path:
    study = folder / "study.toml"
    study.write_text(f'[data]\nspec = "synthetic:{tiny_faces}"\n[[models]]\narchitecture = "small"\n')
    return study


#: Each command that writes a folder, pointed into a read-only one (report: the run folder itself is
#: read-only, so its default RUN/report cannot be made).
READ_ONLY = {
    "probe": lambda faces, ro, tmp: _probe(faces, ro / "run", "--attributes", "Eyeglasses"),
    "run": lambda faces, ro, tmp: ["run", str(_study(faces, tmp)), "--out", str(ro / "run")],
    "report": lambda faces, ro, tmp: ["report", str(ro)],
    "synth": lambda faces, ro, tmp: ["synth", "--out", str(ro / "faces"), "--identities", "2"],
    "train": lambda faces, ro, tmp: [
        *("train", "recognition", "--model", "small", "--data", f"synthetic:{faces}", "--epochs", "1"),
        *("--input-size", "32", "--out", str(ro / "train")),
    ],
    "demo": lambda faces, ro, tmp: ["demo", "--quick", "--out", str(ro / "demo")],
}


@pytest.mark.parametrize("command", list(READ_ONLY))
def test_a_read_only_run_folder_is_one_line(tiny_faces, forked_cli, tmp_path, command):
    """Also as root (CI runs as root): see conftest.read_only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if command == "report":
        _results_only_run(folder)
    before = sorted(folder.rglob("*"))
    with read_only(folder, tmp_path) as env:
        args = READ_ONLY[command](tiny_faces, folder, tmp_path)
        proc = run_cli(*args, env=env) if env else forked_cli(*args)  # a guard loads as the process starts
    assert_one_line_error(proc, str(folder))
    assert sorted(folder.rglob("*")) == before, "something was written into the read-only folder"


def test_a_users_problem_under_dask_is_raised_once_and_not_retried(tmp_path):
    from faceprobe.run.config import parse_config
    from faceprobe.run.entries import model_entries
    from faceprobe.run.runner import Unit, _run_dask

    config = parse_config(
        {"data": {"spec": f"synthetic:{tmp_path / 'gone'}"}, "models": [{"architecture": "small"}]}
    )
    (tmp_path / "manifest.json").write_text(json.dumps({"config": config.to_dict()}))
    unit = Unit("u", model_entries(config)[0], ("backbone.stem",))
    with pytest.raises(FaceprobeError, match="gone"):
        _run_dask(tmp_path, [unit], "", 1, lambda k: None)
    starts = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(starts) == 1, "a deterministic error is not run again on another worker"


def test_an_unreachable_scheduler_is_one_line_within_dasks_connect_timeout(tiny_faces, tmp_path):
    start = time.monotonic()
    proc = run_cli(
        *_probe(tiny_faces, tmp_path / "run", "--attributes", "Eyeglasses"),
        "--executor",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "4s"},
    )
    assert_one_line_error(proc, "cannot reach the Dask scheduler tcp://127.0.0.1:9 within 4 s")
    assert time.monotonic() - start < 25  # the process's start and imports, and 4 s of trying
