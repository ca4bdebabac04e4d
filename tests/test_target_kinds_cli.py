"""Multi-class and continuous targets from a folder: CSV, probed end to end through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from conftest import assert_one_line_error, run_cli, tiny_study
from faceprobe.run import read_table


def _faces(root: Path, n: int = 120) -> Path:
    """Images whose brightness is a continuous value and whose tint is one of three classes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    value = rng.uniform(0, 100, size=n)
    tint = rng.choice(["red", "green", "blue"], size=n)
    for i in range(n):
        pixels = rng.normal(60 + 1.2 * value[i], 12, size=(32, 32, 3))
        pixels[..., ["red", "green", "blue"].index(tint[i])] += 50
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
    pd.DataFrame(
        {
            "file": [f"images/{i:03d}.png" for i in range(n)],
            "Smiling": rng.integers(0, 2, size=n),
            "tint": tint,
            "brightness": np.round(value, 2),
        }
    ).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def _study(labels: Path, extra: str = "") -> str:
    """A study of the folder's three targets with the small network (``extra``: lines of a [data.kinds])."""
    study = tiny_study(
        labels,
        data={
            "spec": f"folder:{labels}",
            "attributes": ["Smiling", "tint", "brightness"],
            "train": 60,
            "val": 40,
        },
        probe={"single_units": True, "vip_study": 4},
        run={"batch_size": 32},
    )
    return study + (f"\n[data.kinds]\n{extra}\n" if extra else "")


def test_multiclass_and_continuous_folder_targets_probe_end_to_end(tmp_path: Path) -> None:
    labels = _faces(tmp_path / "faces")
    study = tmp_path / "study.toml"
    study.write_text(_study(labels))
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    results = read_table(tmp_path / "run")
    metrics = results.groupby("attribute")["metric"].agg(lambda m: sorted(set(m)))
    assert metrics["Smiling"] == ["accuracy"] and metrics["Control_Random"] == ["accuracy"]
    assert metrics["tint"] == ["balanced_accuracy"]
    assert metrics["brightness"] == ["mae", "r2"]
    layer = results[(results["representation"] == "layer") & (results["split"] == "val")]
    by = layer.groupby(["attribute", "metric"])["accuracy"]
    assert by.max()[("brightness", "r2")] > 0.8  # planted in the pixels: some layer of a random net holds it
    assert by.min()[("brightness", "mae")] < 12  # in the value's unit (it spans 0 to 100)
    assert by.max()[("tint", "balanced_accuracy")] > 0.9
    for representation in ("channels", "neurons", "channel", "neuron"):
        kinds = results.loc[results["representation"] == representation, "metric"]
        assert {"r2", "mae", "balanced_accuracy"} <= set(kinds), representation
    vip = read_table(tmp_path / "run", "vip_study")
    assert set(vip.loc[vip["attribute"] == "brightness", "metric"]) == {"r2"}
    assert vip.loc[vip["attribute"] == "tint", "mean_positive"].isna().all()
    summary = proc.stdout + proc.stderr
    assert "brightness" in summary


def test_declared_kinds_in_the_study_and_a_column_that_fits_none(tmp_path: Path) -> None:
    labels = _faces(tmp_path / "faces", n=48)
    study = tmp_path / "study.toml"
    study.write_text(_study(labels, 'brightness = "binary"'))
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "data.kinds: brightness has", "so it cannot be binary")
    table = pd.read_csv(labels)
    table["note"] = [f"free text {i}" for i in range(len(table))]
    table.to_csv(labels, index=False)
    study.write_text(_study(labels))
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run2"))
    assert_one_line_error(proc, f"{labels}: column note fits no kind of target", "remove it from the table")
