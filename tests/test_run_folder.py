"""Run folders keep results, not gigabytes: the activation store goes when a run finishes, unless kept."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import assert_one_line_error, held_by_another_process, run_cli
from faceprobe.run import load_config, read_table, run_study
from faceprobe.run.folder import folder_sizes

STUDY = """
[data]
spec = "synthetic:{data}"
attributes = ["Eyeglasses"]
train = 16
val = 16

[[models]]
architecture = "small"
layers = "backbone.stage1.0,backbone.stage2.0,backbone.stage3.0"
input_size = 32

[probe]
components = 2
top_k = 2
vip_study = 0

[run]
memory_gb = 0
layers_per_unit = 1
keep_store = {keep}
"""


def _run(data: Path, run_dir: Path, keep: bool) -> pd.DataFrame:
    study = run_dir.parent / f"{run_dir.name}.toml"
    study.write_text(STUDY.format(data=data, keep=str(keep).lower()))
    run_study(load_config(study), run_dir)
    return read_table(run_dir)


@pytest.fixture(scope="module")
def runs(tiny_faces, tmp_path_factory, extractions):
    root = tmp_path_factory.mktemp("folders")
    return {
        keep: (root / f"keep-{keep}", _run(tiny_faces, root / f"keep-{keep}", keep)) for keep in (False, True)
    }


def test_a_finished_run_leaves_no_store_and_the_same_tables(runs):
    (plain, plain_results), (kept, kept_results) = runs[False], runs[True]
    assert not (plain / "store").exists()
    assert folder_sizes(kept)["store"] > 0 and folder_sizes(plain)["store"] == 0
    pd.testing.assert_frame_equal(plain_results, kept_results)


def test_a_kept_store_is_reused_without_a_forward_pass(runs, tiny_faces, extractions):
    kept, results = runs[True]
    for done in (kept / "units").glob("*.done"):
        done.unlink()
    shutil.rmtree(kept / "results.parquet")
    before = len(extractions)
    assert _run(tiny_faces, kept, True).equals(results)
    assert len(extractions) > before and all(call["images"] == 0 for call in extractions[before:])


def test_status_shows_sizes_and_clean_frees_the_store_of_a_finished_run(runs):
    kept, _ = runs[True]
    status = run_cli("status", str(kept))
    assert status.returncode == 0 and "on disk: tables" in status.stdout and "store" in status.stdout
    proc = run_cli("clean", str(kept))
    assert proc.returncode == 0 and "freed" in proc.stdout
    assert not (kept / "store").exists() and (kept / "results.parquet").exists()
    assert (kept / "manifest.json").exists() and (kept / "draws.parquet").exists()


def test_clean_is_refused_while_a_process_holds_the_run(runs):
    plain, _ = runs[False]
    with held_by_another_process(plain):
        assert_one_line_error(run_cli("clean", str(plain)), "in use by process")


def test_an_unfinished_run_resumes_after_clean_with_identical_tables(runs, tiny_faces, tmp_path):
    plain, results = runs[False]
    copy = tmp_path / "copy"
    shutil.copytree(plain, copy)
    done = sorted((copy / "units").glob("*.done"))
    for marker in done[1:]:  # as if killed after the first unit: its store is half the run's
        marker.unlink()
        (copy / "results.parquet" / f"{marker.stem}.parquet").unlink()
    assert run_cli("clean", str(copy)).returncode == 0
    assert _run(tiny_faces, copy, False).equals(results)
