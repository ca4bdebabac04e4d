"""The report's figures drawn by worker processes: the same page and files as drawn in one process, and a
script without a ``__main__`` guard may build reports (the workers never run it again)."""

from __future__ import annotations

import subprocess
import sys

from conftest import write_hand_run

SCRIPT = """
import sys
from pathlib import Path

import psutil

from faceprobe.report.html import build_report
from faceprobe.report.run import load_run

print("the script ran", flush=True)
run, out = Path(sys.argv[1]), Path(sys.argv[2])
build_report([load_run(run)], out / "here", workers=1)
build_report([load_run(run)], out / "workers", workers=2)
drawers = [p for p in psutil.Process().children(recursive=True) if "LokyProcess" in " ".join(p.cmdline())]
print("drawing processes", len(drawers))
"""


def test_figures_drawn_by_workers_give_the_page_and_files_drawn_in_one_process(tmp_path):
    run = write_hand_run(tmp_path / "run")
    script = tmp_path / "no_main_guard.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(run), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("the script ran") == 1, proc.stdout
    assert "drawing processes 2" in proc.stdout, proc.stdout
    here, workers = tmp_path / "here", tmp_path / "workers"
    assert (here / "index.html").read_text() == (workers / "index.html").read_text()
    files = sorted(p.relative_to(here) for p in here.rglob("*") if p.suffix in (".png", ".csv"))
    assert len(files) > 10
    assert files == sorted(p.relative_to(workers) for p in workers.rglob("*") if p.suffix in (".png", ".csv"))
    for path in files:
        assert (here / path).read_bytes() == (workers / path).read_bytes(), path
