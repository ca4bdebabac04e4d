"""The real CLI killed (SIGKILL) or starved of disk at chosen points resumes to the same tables.

A small wrapper script patches one named function so that its k-th matching call kills the process (or
raises ENOSPC), then runs the ``faceprobe`` entry point. A point is ``module:qualname`` (looked up when
called, so it hits every caller that resolves it through that module), ``k``, an optional substring the
call's arguments must contain, and how many units must be finished before calls are counted. After each
fault the same command runs again without the fault; the tables must equal an uninterrupted reference run
exactly, and no unit that had finished may start again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import tiny_study
from faceprobe.data.synth import generate
from faceprobe.run import load_config, read_table, run_status, run_study

STUDY = {
    "data": {"attributes": ["Eyeglasses"], "train": 16, "val": 20, "test": -1},
    "probe": {"components": 2, "top_k": 2, "single_units": True, "vip_study": 3},
    "ablation": {"depths": [1], "fractions": [0.5], "attributes": ["Eyeglasses"]},
    "run": {"layers_per_unit": 3, "batch_size": 16, "memory_gb": 0},
}

WRAPPER = """
import errno, importlib, json, os, signal, sys
from pathlib import Path

fault = json.loads(sys.argv[1])
module, _, qualname = fault["target"].partition(":")
owner = importlib.import_module(module)
*parents, name = qualname.split(".")
for parent in parents:
    owner = getattr(owner, parent)
original = getattr(owner, name)
units = Path(fault["units"])
calls = 0


def faulty(*args, **kwargs):
    global calls
    matches = not fault["match"] or fault["match"] in repr(args)
    if matches and len(list(units.glob("*.done"))) >= fault["after"]:
        calls += 1
        if calls == fault["k"]:
            if fault["action"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            paths = [a for a in args if isinstance(a, (str, os.PathLike))]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *paths[:1])
    return original(*args, **kwargs)


setattr(owner, name, faulty)
sys.argv = ["faceprobe", *sys.argv[2:]]
from faceprobe.cli import main

main()
"""

TABLES = ("results", "vip_study", "ablation")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    data = generate(root / "faces", identities=8, images_per_identity=10, size=32, seed=0, workers=1)
    (root / "fault.py").write_text(WRAPPER)
    path = root / "study.toml"
    path.write_text(tiny_study(data, **STUDY))
    return path


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_study(load_config(study), run_dir)
    assert len(run_status(run_dir).finished) == 3  # two probe units and one ablation unit
    return run_dir


def _cli(
    study: Path, args: list[str], run_dir: Path | None = None, env: dict[str, str] | None = None, **fault
) -> subprocess.CompletedProcess:
    """``faceprobe ARGS``; with a fault (target, k, match, after, action) through the wrapper script.

    Whether it ends or is killed, nothing it started may outlive it for long (a killed report's drawing
    workers once did, for good): it leads a session of its own, and soon after it is gone no process of that
    session may be left.
    """
    command = [sys.executable, "-m", "faceprobe.cli", *args]
    if fault:
        spec = {"k": 1, "match": "", "after": 0, "action": "kill", "units": str(run_dir / "units"), **fault}
        command = [sys.executable, str(study.parent / "fault.py"), json.dumps(spec), *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        environment = {**os.environ, **(env or {})}
        proc = subprocess.Popen(
            command, stdout=out, stderr=err, text=True, start_new_session=True, env=environment
        )
        proc.wait(timeout=300)
        deadline = time.monotonic() + 10  # a worker still starting ends once it can see its parent gone
        while _left_running(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _left_running(proc.pid), f"{args}: processes outlived the command"
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(command, proc.returncode, out.read(), err.read())


def _left_running(session: int) -> list[int]:
    """Processes alive in ``session`` (zombies are dead)."""
    alive = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == session and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except (OSError, psutil.NoSuchProcess):
            continue
    return alive


def _events(run_dir: Path, event: str) -> list[str]:
    log = run_dir / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return [e["unit"] for e in map(json.loads, lines) if e["event"] == event]


def _assert_same_tables(run_dir: Path, reference: Path) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(
            read_table(run_dir, name), read_table(reference, name), check_exact=True
        )


def _assert_nothing_half_written(run_dir: Path) -> None:
    """Every visible file is whole; a write cut short is at most a hidden temporary file."""
    for part in run_dir.rglob("*.parquet"):
        if part.is_file():
            pd.read_parquet(part)
    for path in ("manifest.json", "units/plan.json"):
        if (run_dir / path).exists():
            json.loads((run_dir / path).read_text())
    assert all(temp.name.startswith(".") for temp in run_dir.rglob("*.tmp"))
    for name in TABLES:
        read_table(run_dir, name)


def _finished(run_dir: Path) -> set[str]:
    return set(run_status(run_dir).finished) if (run_dir / "units" / "plan.json").exists() else set()


STORE = "faceprobe.extract.store:"  # memory_gb = 0: every unit streams its layers through the store

# Faults applied one after the other to the same run folder, in the order a run reaches them: (what, the
# fault, units finished after it). A fault is the target ``module:qualname``, the k-th call that counts
# (default 1), a substring of its arguments, the units that must be finished before calls count, and
# kill (SIGKILL) or enospc (OSError: no space left on device).
FAULTS = [
    ("prepare, before units/plan.json", {"target": "os:replace", "match": "plan.json"}, 0),
    (
        "mid store write: a chunk written, its batch not marked",
        {"target": STORE + "_write_atomically", "k": 2},
        0,
    ),
    ("store, a batch written, not marked", {"target": STORE + "ActivationStore.mark_done", "k": 2}, 0),
    ("a unit's parts written, not its done marker", {"target": "os:replace", "match": "__layers000.done"}, 0),
    (
        "disk full writing a results part",
        {"target": "pandas:DataFrame.to_parquet", "match": "results.parquet", "after": 1, "action": "enospc"},
        1,
    ),
    ("mid probe", {"target": "faceprobe.probe:Probe.fit", "k": 3, "after": 1}, 1),
    (
        "results part written to its temp file, before the rename",
        {"target": "os:replace", "match": "results.parquet", "after": 1},
        1,
    ),
    (
        "disk full appending to the log",
        {"target": "os:open", "match": "log.jsonl", "after": 1, "action": "enospc"},
        1,
    ),
    (
        "done marker written, finish not logged",
        {"target": "faceprobe.run.runner:_log", "match": "finish", "after": 1},
        2,
    ),
    (
        "mid ablated pass: a chunk of the ablation unit's own store written",
        {"target": STORE + "_write_atomically", "match": "/ablated/", "k": 2, "after": 2},
        2,
    ),
]


@pytest.mark.slow
def test_faults_at_every_point_then_a_rerun_gives_the_reference_tables(study, reference, tmp_path):
    run_dir = tmp_path / "run"
    command = ["run", str(study), "--out", str(run_dir)]
    starts_seen = 0
    for what, fault, finished in FAULTS:
        done_before, temps_before = _finished(run_dir), set(run_dir.rglob("*.tmp"))
        out = _cli(study, command, run_dir, **fault)
        if fault.get("action") == "enospc":
            assert out.returncode == 2 and "Traceback" not in out.stderr, (what, out.stderr[-2000:])
            (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
            assert f"{run_dir}/" in line and fault["match"] in line, (what, line)
            assert line.endswith("disk full (No space left on device); free space and run again"), (
                what,
                line,
            )
            assert set(run_dir.rglob("*.tmp")) == temps_before, f"{what}: a temporary file was left behind"
            parts = {part.stem for part in (run_dir / "results.parquet").glob("*.parquet")}
            assert parts == _finished(run_dir), f"{what}: a part without its done marker"
        else:
            assert out.returncode == -9, f"{what}: {fault['target']} was not reached: {out.stderr[-2000:]}"
        assert len(_finished(run_dir)) == finished, what
        _assert_nothing_half_written(run_dir)
        starts = _events(run_dir, "start")
        assert not set(starts[starts_seen:]) & done_before, f"{what}: a finished unit started again"
        starts_seen = len(starts)
    done_before = _finished(run_dir)
    again = _cli(study, command)
    assert again.returncode == 0, again.stderr[-2000:]
    status = run_status(run_dir)
    assert status.complete and status.total == 3
    assert sorted(_events(run_dir, "start")[starts_seen:]) == sorted(set(status.finished) - done_before)
    _assert_same_tables(run_dir, reference)


@pytest.mark.slow
def test_sigkill_during_the_report_then_rerun_gives_the_same_report(study, reference, tmp_path):
    from faceprobe.report.groups import DEFAULT_GROUPS
    from faceprobe.report.html import build_report
    from faceprobe.report.run import load_run

    first, second = tmp_path / "first", tmp_path / "second"
    build_report([load_run(reference)], first, DEFAULT_GROUPS)
    command = ["report", str(reference), "--out", str(second)]
    # killed as it hands its third figure to its two drawing workers: some figures written, others being drawn
    workers = {"LOKY_MAX_CPU_COUNT": "2"}
    killed = _cli(study, command, reference, workers, target="faceprobe.report.saving:FigureSaver.save", k=3)
    assert killed.returncode == -9 and not (second / "index.html").exists()
    again = _cli(study, command)
    assert again.returncode == 0, again.stderr[-2000:]
    csvs = sorted(p.relative_to(first) for p in first.rglob("*.csv"))
    assert csvs and csvs == sorted(p.relative_to(second) for p in second.rglob("*.csv"))
    for path in csvs:
        assert (first / path).read_bytes() == (second / path).read_bytes(), path
    assert (second / "index.html").read_text() == (first / "index.html").read_text()
