"""The report's summary and uncertainty, on hand-written run folders (seconds, no browser): what the page
says first, the 95% intervals behind every accuracy and r, rows too small or too optimistic to trust, the
"Other" group, the manifest as a table, and compare noticing curves that coincide."""

from __future__ import annotations

import html
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from conftest import HAND_ATTRIBUTES, HAND_LAYERS, write_hand_run
from faceprobe.cli import app
from faceprobe.report.figures import draw_panels
from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from faceprobe.report.stats import fisher_interval, wilson_interval
from faceprobe.report.tables import best_units
from faceprobe.results import to_frame, write_results
from faceprobe.run.summary import summarise


def _section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert match, name
    return match.group(1)


def test_depth_bands_are_each_points_wilson_interval():
    curves = pd.DataFrame(
        {
            "panel": "Smiling",
            "series": "layer",
            "depth": [3, 9, 40],
            "layer": ["a", "b", "c"],
            "accuracy": [0.6, 0.75, 0.9],
            "n_eval": [64, 400, 6144],
        }
    )
    fig = draw_panels(curves, "title")
    (band,) = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    vertices = band.get_paths()[0].vertices
    low, high = wilson_interval(curves["accuracy"], curves["n_eval"])
    for position in range(3):  # layers evenly spaced: depths 3, 9, 40 at 0, 1, 2
        ys = vertices[np.isclose(vertices[:, 0], position), 1]
        assert ys.min() == pytest.approx(100 * low[position]) and ys.max() == pytest.approx(
            100 * high[position]
        )
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["3 a", "9 b", "40 c"]


def _rows(split_accuracy: dict[str, float], n_eval: dict[str, int], model: str = "m/s0") -> list[dict]:
    return [
        {
            "model": model,
            "source": model,
            "variant": "m",
            "layer": "fc",
            "depth": 2,
            "attribute": "Smiling",
            "representation": "layer",
            "k": 0,
            "unit": -1,
            "split": split,
            "accuracy": accuracy,
            "n_train": 100,
            "n_eval": n_eval[split],
        }
        for split, accuracy in split_accuracy.items()
    ]


def test_best_units_give_intervals_from_the_images_scored_and_mark_optimism():
    val_only = best_units(pd.DataFrame(_rows({"val": 0.8}, {"val": 64})))
    row = val_only.iloc[0]
    assert row["optimistic"] and row["split"] == "val" and row["n_eval"] == 64
    expected = wilson_interval(0.8, 64)
    assert (row["layer accuracy low"], row["layer accuracy high"]) == pytest.approx(expected)

    scored = best_units(pd.DataFrame(_rows({"val": 0.8, "test": 0.7}, {"val": 64, "test": 1000})))
    row = scored.iloc[0]
    assert not row["optimistic"] and row["n_eval"] == 1000
    assert (row["layer accuracy low"], row["layer accuracy high"]) == pytest.approx(
        wilson_interval(0.7, 1000)
    )

    seeds = pd.DataFrame(_rows({"val": 0.8}, {"val": 64}) + _rows({"val": 0.6}, {"val": 64}, "m/s1"))
    row = best_units(seeds, over_seeds=True).iloc[0]
    assert row["layer accuracy"] == pytest.approx(0.7) and row["n_eval"] == 64  # per model
    expected = wilson_interval(0.7, 128)  # the mean's interval takes both seeds' images
    assert (row["layer accuracy low"], row["layer accuracy high"]) == pytest.approx(expected)


def test_page_opens_with_the_summary_and_every_warning_the_run_printed(tmp_path):
    data = {
        "shortened": {"Bald": [120, 300]},
        "skipped_images": ["000017.jpg"],
        "dropped": {"Blurry": "1 class"},
    }
    run = write_hand_run(tmp_path / "run", n_eval=60, nan_rows=3, manifest_data=data)
    page = build_report([load_run(run)], tmp_path / "out").read_text()
    assert re.search(r"<nav>(.*?)</nav>", page).group(1).startswith('<a href="#summary">Summary</a>')
    summary = _section(page, "summary")
    box = re.search(r'<div class="warnings"[^>]*>(.*?)</div>', summary, re.S).group(1)
    printed = summarise(run).warnings  # what the end of the run printed: the same code, the same words
    assert len(printed) >= 4
    for warning in printed:
        assert f"<li>{html.escape(warning)}</li>" in box, warning
    assert "fewer than 100 images" in box and "Other: Young" in box
    assert 'class="few' in summary and "±" in summary  # greyed rows, intervals
    assert "the control (Control_Random, random labels) reaches at most" in summary

    heat = pd.read_csv(
        tmp_path
        / "out"
        / "figures"
        / "heatmap-toynet-checkpoint-data-checkpoints-arcface-r50-webface-00000000.csv"
    )
    results = load_run(run).table("results")
    layer = results[(results["representation"] == "layer") & (results["split"] == "val")]
    expected = layer[layer["attribute"] == "Eyeglasses"].set_index("depth")["accuracy"]
    shown = heat.set_index("attribute").loc["Eyeglasses"]
    for depth, name, _ in HAND_LAYERS:
        assert shown[f"{depth} {name}"] == pytest.approx(expected[depth])
    assert set(heat["attribute"]) == set(HAND_ATTRIBUTES) - {"Control_Random"}


def test_a_clean_run_says_it_has_no_warnings(tmp_path):
    run = write_hand_run(tmp_path / "run")
    write_results(to_frame([], "ablation"), run / "ablation.parquet")  # every study ran
    page = build_report([load_run(run)], tmp_path / "out", {"All": HAND_ATTRIBUTES}).read_text()
    summary = _section(page, "summary")
    assert '<p class="ok">No warnings' in summary and 'class="warnings"' not in summary


def test_attributes_outside_every_group_are_drawn_as_other(tmp_path):
    run = write_hand_run(tmp_path / "run")
    build_report([load_run(run)], tmp_path / "out")
    (groups,) = (tmp_path / "out" / "figures").glob("groups-*.csv")
    panels = pd.read_csv(groups).groupby("panel")["attribute"].unique()
    assert list(panels["Other"]) == ["Young"]  # in no thesis group; the control is never a member
    assert {"Hair colours and baldness", "Soft biometrics", "Non-biometric"} <= set(panels.index)


def test_manifest_is_a_table_and_vip_rs_have_intervals_in_depth_order(tmp_path):
    run = write_hand_run(tmp_path / "run")
    page = build_report([load_run(run)], tmp_path / "out").read_text()
    manifest = _section(page, "manifest")
    assert "<pre>" not in manifest
    assert re.search(r"<td>data\.spec</td><td>synthetic:/data/faces</td>", manifest)
    assert re.search(r"<td>models\[0\]\.seeds</td><td>\[0\]</td>", manifest)

    projections = pd.read_csv(tmp_path / "out" / "tables" / "vip-projections.csv")
    assert list(projections["depth"]) == sorted(projections["depth"])
    name = "r(vip, accuracy)"
    low, high = fisher_interval(projections[name], projections["neurons"])
    np.testing.assert_allclose(projections[f"{name} low"], low)
    np.testing.assert_allclose(projections[f"{name} high"], high)
    correlations = pd.read_csv(tmp_path / "out" / "tables" / "vip-correlations.csv")
    row = correlations[correlations["measure"] == "vip"].iloc[0]
    assert row["mean r low"] < row["mean r"] < row["mean r high"] and row["projections"] > 1


def test_compare_says_when_two_runs_curves_coincide(tmp_path):
    run = write_hand_run(tmp_path / "a")
    shutil.copytree(run, tmp_path / "b")  # the same run twice: every curve hides its twin
    other = write_hand_run(tmp_path / "c", noise_seed=1)
    same = CliRunner().invoke(
        app, ["compare", str(run), str(tmp_path / "b"), "--out", str(tmp_path / "same")]
    )
    assert same.exit_code == 0 and "curves coincide" in " ".join(same.output.split())
    page = (tmp_path / "same" / "index.html").read_text()
    assert "give the same accuracy at all" in _section(page, "summary")
    assert "curves coincide" in _section(page, "accuracy-over-depth")
    different = CliRunner().invoke(
        app, ["compare", str(run), str(other), "--out", str(tmp_path / "different")]
    )
    assert different.exit_code == 0 and "coincide" not in different.output
    assert "coincide" not in (tmp_path / "different" / "index.html").read_text()
