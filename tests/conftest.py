"""Fixtures and helpers shared by the test modules: tiny synthetic faces, and the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from faceprobe.data.synth import generate


def run_cli(*args: str, cwd: Path | str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``faceprobe ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, one ``error:`` line on stderr holding every fragment.

    Progress lines of work done before the problem showed may precede it; the error is the last line.
    """
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.split(":")[0]]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """72 synthetic 32-pixel faces of 6 identities with CelebA's attributes planted: seconds to probe."""
    return generate(
        tmp_path_factory.mktemp("tiny") / "faces", identities=6, images_per_identity=12, size=32, workers=1
    )


@pytest.fixture(scope="module")
def extractions():
    """Each call of the store's extraction while the module runs: layers asked for, images run through the
    network, store size, and whether the call extracted under an ablation."""
    from faceprobe.run import work

    calls = []
    extract_to_store = work.extract_to_store

    def spy(model, dataset, layers, store, progress=None, **kwargs):
        names = [info.name for info in layers]
        calls.append({"layers": names, "images": 0, "n": store.n, "ablated": "ablated" in store.key})

        def count(images):
            calls[-1]["images"] += images
            if progress is not None:
                progress(images)

        return extract_to_store(model, dataset, layers, store, progress=count, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(work, "extract_to_store", spy)
        yield calls


@contextmanager
def held_by_another_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    """A separate process holds the run folder's lock for the body, then is killed (its lock is freed)."""
    script = (
        "import pathlib, time\nfrom faceprobe.run.lock import hold\n"
        f"with hold(pathlib.Path({str(run_dir)!r})):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


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


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`faceprobe demo --quick` run once for the session, offline (a network attempt fails the run)."""
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
        timeout=1800,  # minutes on a quiet laptop; a busy shared machine may need many times that
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not attempts.exists(), f"the demo tried to reach the network: {attempts.read_text()}"
    return out, proc
