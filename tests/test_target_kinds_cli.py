"""Multi-class and continuous targets from a folder: CSV, probed end to end through the CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli, tiny_study
from faceprobe.run import read_table
from faceprobe.run.summary import summarise


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


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("kinds")
    labels = _faces(root / "faces")
    study = root / "study.toml"
    study.write_text(_study(labels))
    proc = run_cli("run", str(study), "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    return root / "run", proc


def test_multiclass_and_continuous_folder_targets_probe_end_to_end(finished) -> None:
    run, proc = finished
    results = read_table(run)
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
    vip = read_table(run, "vip_study")
    assert set(vip.loc[vip["attribute"] == "brightness", "metric"]) == {"r2"}
    assert vip.loc[vip["attribute"] == "tint", "mean_positive"].isna().all()
    assert "brightness" in proc.stdout  # the end-of-run table names it (its metric may be cut off there)
    best = summarise(run).best.set_index("attribute")["metric"]  # the end-of-run table's best layers
    assert (
        best["brightness"] == "r2" and best["tint"] == "balanced_accuracy" and best["Smiling"] == "accuracy"
    )
    chance = results.drop_duplicates(["attribute", "metric"]).set_index(["attribute", "metric"])["chance"]
    assert chance[("Smiling", "accuracy")] == 0.5 and chance[("brightness", "r2")] == 0.0
    assert chance[("tint", "balanced_accuracy")] == pytest.approx(1 / 3)
    assert 15 < chance[("brightness", "mae")] < 35  # the mean predictor's MAE of a value uniform on 0-100


def test_the_report_draws_each_kind_on_its_own_axis(finished, tmp_path: Path) -> None:
    run, _ = finished
    proc = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Targets beyond binary" in page
    assert (
        "balanced accuracy over depth, multi-class targets, read by PLS-DA + QDA (dashed: chance, 1 / classes"
        in page
    )
    assert "R^2 over depth, continuous targets, read by least squares" in page and "R^2 = 0" in page
    figures = {p.name for p in (tmp_path / "report").rglob("*.png")}
    assert any(name.startswith("balanced_accuracy-") for name in figures), figures
    assert any(name.startswith("r2-") for name in figures), figures
    best = next((tmp_path / "report").rglob("continuous-best.csv"))
    table = pd.read_csv(best)
    assert (
        table["attribute"].tolist() == ["brightness"] and (table["mae"] < table["mae_mean_predictor"]).all()
    )
    # the binary views read accuracies only: no R^2 or MAE in the accuracy figures' data
    for data in (tmp_path / "report").rglob("depth-*.csv"):
        assert "brightness" not in pd.read_csv(data)["attribute"].tolist(), data


def test_a_results_file_without_the_metric_column_still_makes_a_report(finished, tmp_path: Path) -> None:
    run, _ = finished
    old = tmp_path / "old"
    shutil.copytree(run, old)
    frame = read_table(old)
    frame = frame[frame["metric"] == "accuracy"].drop(columns=["metric", "chance"])
    shutil.rmtree(old / "results.parquet")
    frame.to_parquet(old / "results.parquet", index=False)
    proc = run_cli("report", str(old), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Smiling" in page and "Targets beyond binary" not in page


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


def test_ablation_reads_each_kind_in_its_headline_metric(tmp_path: Path) -> None:
    labels = _faces(tmp_path / "faces", n=96)
    study = tmp_path / "study.toml"
    ablation = '\n[ablation]\ndepths = [13]\nfractions = [0.5]\nattributes = ["tint", "brightness"]\n'
    study.write_text(_study(labels) + ablation)
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    drops = read_table(tmp_path / "run", "ablation")
    assert set(drops["attribute"]) == {"tint", "brightness"}
    results = read_table(tmp_path / "run")
    headline = results[(results["metric"] != "mae") & (results["split"] == "val")]
    before = headline.set_index(["layer", "attribute", "representation"])["accuracy"]
    for row in drops.itertuples():  # the baseline is the unablated probe's R^2 or balanced accuracy
        assert row.baseline_accuracy == before[(row.layer, row.attribute, row.representation)]
        assert row.drop == row.baseline_accuracy - row.accuracy
