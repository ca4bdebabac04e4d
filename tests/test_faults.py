"""Faults and hostile input, each checked for its message and for what it leaves on disk.

Atomic writes under a full disk; a study started on a corrupt image, a checkpoint of another shape, a layer
that does not exist or a pickle that would run code (through the CLI, in-process); probes on tiny classes
and singular covariances; markup in attribute, layer, model and folder names in the HTML report.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from faceprobe.atomic import atomic_path, atomic_write_text
from faceprobe.cli import main
from faceprobe.data.synth import generate
from faceprobe.errors import FaceprobeError
from faceprobe.results import to_frame, write_results

# --- atomic writes under a full disk -----------------------------------------------------------------------


def _half_then_full(path: Path, code: int = errno.ENOSPC) -> None:
    """What a write does when the disk fills up mid-file: some bytes land, then the OS refuses."""
    path.write_bytes(b"PAR1 half a file")
    raise OSError(code, os.strerror(code))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, code):
    path = atomic_write_text(tmp_path / "table.json", "old")
    with pytest.raises(FaceprobeError) as err, atomic_path(path) as tmp:
        _half_then_full(tmp, code)
    assert str(err.value) == f"{path}: disk full ({os.strerror(code)}); free space and run again"
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_other_write_errors_pass_through_and_leave_no_temporary(tmp_path):
    with pytest.raises(PermissionError), atomic_path(tmp_path / "new.txt") as tmp:
        raise PermissionError(errno.EACCES, "denied", str(tmp))
    assert not list(tmp_path.iterdir())


def test_write_results_under_a_full_disk_leaves_the_previous_part(tmp_path, monkeypatch):
    keys = {"model": "m", "layer": "l", "depth": 0, "attribute": "a", "representation": "layer", "k": 0}
    rows = [{**keys, "split": s, "accuracy": 0.75, "n_train": 8, "n_eval": 8} for s in ("val", "test")]
    part = write_results(rows, tmp_path / "results.parquet" / "unit.parquet")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", lambda frame, path, **kw: _half_then_full(Path(path)))
    with pytest.raises(
        FaceprobeError, match=rf"^{re.escape(str(part))}: disk full .*; free space and run again$"
    ):
        write_results(rows[:1], part)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(part), to_frame(rows))
    assert [p.name for p in part.parent.iterdir()] == ["unit.parquet"]


# --- a study on bad input, through the CLI ------------------------------------------------------------------

STUDY = {
    "data": {"attributes": ["Eyeglasses"], "train": 8, "val": 8, "test": -1, "seed": 1},
    "models": [{"architecture": "small", "layers": "backbone.stem", "input_size": 32}],
    "probe": {"components": 2, "top_k": 2, "single_units": False, "vip_study": 0},
    "run": {"batch_size": 16, "device": "cpu"},
}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return generate(
        tmp_path_factory.mktemp("faults") / "faces", identities=4, images_per_identity=8, size=32, workers=1
    )


def _toml(value) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists of them read the same in TOML


def _study(folder: Path, data: Path, models: dict | None = None, **data_keys) -> Path:
    lines = ["[data]", f"spec = {_toml(f'synthetic:{data}')}"]
    lines += [f"{k} = {_toml(v)}" for k, v in {**STUDY["data"], **data_keys}.items()]
    lines += [
        "[[models]]",
        *(f"{k} = {_toml(v)}" for k, v in {**STUDY["models"][0], **(models or {})}.items()),
    ]
    for table in ("probe", "run"):
        lines += [f"[{table}]", *(f"{k} = {_toml(v)}" for k, v in STUDY[table].items())]
    path = folder / "study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _faceprobe(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the CLI entry point in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["faceprobe", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def _error_line(status: int, err: str) -> str:
    assert status == 2 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert line.startswith("error: ")
    return line


def _nothing_computed(run: Path) -> None:
    assert not list(run.rglob("*.done")) and not list(run.glob("*.parquet/*.parquet")), sorted(run.rglob("*"))


def test_corrupt_image_names_the_file_then_skip_bad_images_records_it(faces, tmp_path, monkeypatch, capsys):
    data = tmp_path / "faces"
    shutil.copytree(faces, data)
    partitions = pd.read_csv(data / "list_eval_partition.txt", sep=" ", header=None, names=["id", "split"])
    bad = partitions.loc[partitions["split"] == 2, "id"].iloc[0]  # a test image: every one is scored
    image = data / "img_align_celeba" / bad
    image.write_bytes(image.read_bytes()[:60])
    run = tmp_path / "run"
    line = _error_line(*_faceprobe(monkeypatch, capsys, "run", _study(tmp_path, data), "--out", run))
    assert f"error: {image}: cannot decode the image" in line and "--skip-bad-images" in line
    assert not (run / "manifest.json").exists()
    _nothing_computed(run)
    status, err = _faceprobe(
        monkeypatch, capsys, "run", _study(tmp_path, data, skip_bad_images=True), "--out", run
    )
    assert status == 0, err
    manifest = json.loads((run / "manifest.json").read_text())
    assert [b[0] for b in manifest["data"]["skipped_images"]] == [bad]
    assert bad not in set(pd.read_parquet(run / "draws.parquet")["image_id"])
    assert len(pd.read_parquet(run / "results.parquet")) > 0


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def _mismatched(folder: Path) -> str:
    from faceprobe.models import load_model

    state = load_model("small", "random", input_size=(32, 32)).module.state_dict()
    first = next(iter(state))
    state["extra.weight"] = state.pop(first)
    torch.save(state, folder / "other.pt")
    return f"checkpoint:{folder / 'other.pt'}"


def _evil(folder: Path) -> str:
    torch.save({"state_dict": {}, "hook": _RunsCode(folder / "ran")}, folder / "evil.pt")
    return f"checkpoint:{folder / 'evil.pt'}"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        pytest.param(
            {"layers": "backbone.stem1"},
            "no probe-able layer 'backbone.stem1'; did you mean 'backbone.stem.1', 'backbone.stem'",
            id="layer",
        ),
        pytest.param(
            {"weights": _mismatched},
            "1 missing (backbone.stem.0.weight); 1 unexpected (extra.weight) keys",
            id="checkpoint-keys",
        ),
        pytest.param({"weights": _evil}, "refuses", id="pickle-runs-code"),
    ],
)
def test_a_study_that_cannot_start_says_why_in_one_line(
    faces, tmp_path, monkeypatch, capsys, models, message
):
    models = {k: [v(tmp_path)] if callable(v) else v for k, v in models.items()}
    run = tmp_path / "run"
    line = _error_line(*_faceprobe(monkeypatch, capsys, "run", _study(tmp_path, faces, models), "--out", run))
    assert message in line, line
    if "weights" in models:
        assert models["weights"][0].removeprefix("checkpoint:") in line
    assert not (tmp_path / "ran").exists(), "the pickle ran code"
    assert not (run / "units" / "plan.json").exists()
    _nothing_computed(run)


# --- probes on degenerate data -----------------------------------------------------------------------------


def test_tiny_class_and_singular_covariance_give_rows_not_crashes():
    from faceprobe.studies.layerwise import AttributeRows, probe_layer

    rng = np.random.default_rng(0)
    shape = (2, 3, 3)
    X = rng.normal(size=(80, 18)).astype(np.float32)
    half = (np.arange(40) % 2).astype(np.int8)
    X[40:][half == 1, 9:] = 1.0  # class 1 is constant on channel 1: a singular covariance there
    tiny = np.zeros(40, np.int8)
    tiny[0] = 1
    rows = {
        "Tiny": AttributeRows(np.arange(40), np.arange(40, 80), tiny, half),
        "Singular": AttributeRows(np.arange(40, 80), np.arange(40), half, half),
    }
    out = pd.DataFrame(probe_layer(X, shape, rows, k=2, n_components=2).rows)
    tiny_rows, singular = out[out["attribute"] == "Tiny"], out[out["attribute"] == "Singular"]
    assert len(tiny_rows) == 3 and tiny_rows["accuracy"].isna().all()
    assert tiny_rows["note"].str.contains("has 1 sample; QDA needs at least 2 per class").all()
    assert len(singular) == 3 and np.isfinite(singular["accuracy"]).all()


# --- markup in names, in the report ------------------------------------------------------------------------

EVIL = "<script>alert(1)</script>"


def test_names_are_escaped_in_the_report(tmp_path):
    from faceprobe.report.groups import DEFAULT_GROUPS
    from faceprobe.report.html import build_report
    from faceprobe.report.run import load_run

    run = tmp_path / "run<svg onload=alert(2)>"
    model, layer = "<img src=x onerror=alert(3)>", "stage\"1'<b>"
    rows = [
        {
            "model": model,
            "layer": f"{layer}{depth}",
            "depth": depth,
            "attribute": attribute,
            "representation": representation,
            "k": 0 if representation == "layer" else 2,
            "split": "val",
            "accuracy": 0.5 + depth / 10,
            "n_train": 8,
            "n_eval": 8,
        }
        for depth in range(3)
        for attribute in (EVIL, "Control_Random")
        for representation in ("layer", "channels", "neurons")
    ]
    write_results(rows, run / "results.parquet" / "part.parquet")
    (run / "manifest.json").write_text(json.dumps({"config": {"data": {"spec": f"synthetic:{EVIL}"}}}))
    index = build_report([load_run(run)], tmp_path / "report", DEFAULT_GROUPS)
    page = index.read_text()
    for markup in (EVIL, "<svg onload", "<img src=x", "<b>"):
        assert markup not in page, markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;svg onload=alert(2)&gt;" in page
    written = [p for p in (tmp_path / "report").rglob("*") if p.is_file()]
    assert all("<" not in p.name and ">" not in p.name for p in written)
    for path in written:
        if path.suffix in (".svg", ".md"):
            assert EVIL not in path.read_text(), path
