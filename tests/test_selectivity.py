"""Selectivity: every curve read against the random-label controls (issue 19).

Per model, layer and attribute the selectivity is the accuracy less the mean accuracy of the controls at
that layer; ``data.controls = N`` adds Control_Random_2 ... Control_Random_N, whose spread the report shows.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, run_cli, tiny_study
from faceprobe.cli import app
from faceprobe.controls import CONTROL, control_names, control_rows, is_control, with_controls
from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from faceprobe.report.stats import wilson_interval
from faceprobe.report.tables import selectivity
from faceprobe.results import to_frame, write_results
from faceprobe.run import load_config, read_table, run_study


def _study(folder: Path, data: Path, **controls: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    tables = {"data": controls, "probe": {"single_units": False, "vip_study": 0}, "run": {"batch_size": 36}}
    path.write_text(tiny_study(data, **tables))
    return path


@pytest.fixture(scope="module")
def default_run(tiny_faces, tmp_path_factory) -> Path:
    """A small study without a ``controls`` key: today's run, one Control_Random."""
    root = tmp_path_factory.mktemp("selectivity")
    run_study(load_config(_study(root, tiny_faces)), root / "run")
    return root / "run"


def _val_layer(results: pd.DataFrame) -> pd.DataFrame:
    return results[(results["split"] == "val") & (results["representation"] == "layer")]


def test_selectivity_is_accuracy_less_the_controls_accuracy_value_for_value(default_run, tmp_path):
    result = CliRunner().invoke(app, ["report", str(default_run), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "tables" / "selectivity.csv")
    val = _val_layer(read_table(default_run, "results"))
    control = val[val["attribute"] == CONTROL].set_index("layer")["accuracy"]
    real = val[val["attribute"] != CONTROL]
    assert len(table) == len(real) > 0 and set(table["attribute"]) == set(real["attribute"])
    merged = real.merge(table, on=["layer", "attribute"], suffixes=("", " table"))
    assert len(merged) == len(real)
    np.testing.assert_allclose(merged["accuracy table"], merged["accuracy"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(merged["control accuracy"], merged["layer"].map(control), rtol=0, atol=1e-12)
    expected = merged["accuracy"] - merged["layer"].map(control)
    np.testing.assert_allclose(merged["selectivity"], expected, rtol=0, atol=1e-12)
    assert (merged["selectivity low"] <= merged["selectivity"]).all()
    assert (merged["selectivity"] <= merged["selectivity high"]).all()
    assert (merged["controls"] == 1).all()
    sizes = val[val["attribute"] == CONTROL].set_index("layer")[["n_train", "n_eval"]]
    same = merged["n_train"].eq(merged["layer"].map(sizes["n_train"])) & merged["n_eval"].eq(
        merged["layer"].map(sizes["n_eval"])
    )
    np.testing.assert_array_equal(merged["same draw sizes"], same)
    shortened = json.loads((default_run / "manifest.json").read_text())["data"]["shortened"]
    assert set(merged.loc[~same, "attribute"]) == set(shortened)  # only a shortened draw differs
    assert "control accuracy min" not in table  # one control: no spread
    page = (tmp_path / "index.html").read_text()
    assert "Selectivity per model, layer and attribute" in page
    assert not list((tmp_path / "figures").glob("selectivity-*"))  # accuracy figures unless asked


def test_report_option_draws_the_depth_figures_as_selectivity(default_run, tmp_path):
    result = CliRunner().invoke(app, ["report", str(default_run), "--out", str(tmp_path), "--selectivity"])
    assert result.exit_code == 0, result.output
    figures = tmp_path / "figures"
    assert not list(figures.glob("depth-*")) and len(list(figures.glob("selectivity-*.png"))) == 1
    curves = pd.read_csv(next(figures.glob("selectivity-*.csv")))
    assert not curves["attribute"].map(is_control).any()  # the control is the line at 0
    val = read_table(default_run, "results")
    val = val[val["split"] == "val"]
    control = val[val["attribute"] == CONTROL].set_index(["layer", "representation"])["accuracy"]
    for row in curves.itertuples():
        accuracy = val[
            (val["attribute"] == row.attribute)
            & (val["layer"] == row.layer)
            & (val["representation"] == row.representation)
        ]["accuracy"].item()
        assert row.selectivity == pytest.approx(
            accuracy - control[(row.layer, row.representation)], abs=1e-12
        )
    assert "val. selectivity (points)" in next(figures.glob("selectivity-*.svg")).read_text()


def test_the_default_run_keeps_its_single_control(default_run):
    manifest = json.loads((default_run / "manifest.json").read_text())
    assert manifest["config"]["data"]["controls"] == 1
    results = read_table(default_run, "results")
    assert sorted(a for a in set(results["attribute"]) if is_control(a)) == [CONTROL]
    drawn = pd.read_parquet(default_run / "draws.parquet")
    assert sorted(a for a in set(drawn["attribute"]) if is_control(a)) == [CONTROL]


def test_the_first_control_is_drawn_as_before_and_more_controls_change_none_of_the_earlier():
    labels = pd.DataFrame({"Smiling": np.arange(500) % 2}, index=[f"{i}.jpg" for i in range(500)])
    one = with_controls(labels, seed=4, count=1)
    before = np.random.default_rng([4, 7]).integers(0, 2, len(labels)).astype(np.int8)  # faceprobe <= 0.x
    np.testing.assert_array_equal(one[CONTROL].to_numpy(), before)
    three = with_controls(labels, seed=4, count=3)
    assert list(three.columns) == ["Smiling", *control_names(3)]
    pd.testing.assert_frame_equal(three[one.columns], one)
    columns = [three[name].to_numpy() for name in control_names(3)]
    for i, a in enumerate(columns):
        assert 0.4 < a.mean() < 0.6
        for b in columns[i + 1 :]:
            assert (a != b).any()
    planted = labels.assign(**{CONTROL: 1})  # a dataset's own control is kept
    assert (with_controls(planted, seed=4, count=2)[CONTROL] == 1).all()
    assert [is_control(n) for n in ("Control_Random", "Control_Random_2", "Control_Random_12")] == [True] * 3
    assert not any(is_control(n) for n in ("Control_Random_1", "Control_Random_x", "Smiling", None))


def _rows(attribute: str, accuracies: list[float], n_train: int = 16) -> list[dict]:
    return [
        {
            "model": "toy#ab/s0",
            "layer": f"l{depth}",
            "depth": depth,
            "attribute": attribute,
            "representation": "layer",
            "k": 0,
            "unit": -1,
            "split": "val",
            "accuracy": accuracy,
            "n_train": n_train,
            "n_eval": 200,
            "kind": "conv",
            "weights": "random",
            "architecture": "toy",
        }
        for depth, accuracy in enumerate(accuracies)
    ]


def test_several_controls_give_a_spread_and_selectivity_against_their_mean(tmp_path):
    controls = {name: [0.5 + 0.01 * i, 0.55 - 0.02 * i] for i, name in enumerate(control_names(3))}
    rows = _rows("Smiling", [0.7, 0.9]) + _rows("Bald", [0.6, 0.8], n_train=10)
    rows += [r for name, accuracies in controls.items() for r in _rows(name, accuracies)]
    run = tmp_path / "run"
    write_results(to_frame(rows), run / "results.parquet")
    table = selectivity(load_run(run).table("results")).set_index(["attribute", "layer"])
    assert set(table.index.get_level_values("attribute")) == {"Smiling", "Bald"}
    spread = pd.DataFrame(controls, index=["l0", "l1"])
    for (attribute, layer), row in table.iterrows():
        assert row["controls"] == 3
        assert row["control accuracy"] == pytest.approx(spread.loc[layer].mean())
        assert row["control accuracy min"] == pytest.approx(spread.loc[layer].min())
        assert row["control accuracy max"] == pytest.approx(spread.loc[layer].max())
        assert row["selectivity"] == pytest.approx(row["accuracy"] - spread.loc[layer].mean())
        low, high = wilson_interval(row["accuracy"], 200)
        assert row["selectivity high"] - row["selectivity low"] > high - low  # two samples' error
        assert row["same draw sizes"] == (attribute == "Smiling")  # Bald's draw was shortened
    page = build_report([load_run(run)], tmp_path / "out", selectivity=True).read_text()
    assert "their lowest and highest" in page
    assert html.escape("Bald: draws of other sizes than the controls'") in page
    assert "the 3 random-label controls (Control_Random ...) reach on average at most" in page
    shown = pd.read_csv(tmp_path / "out" / "tables" / "selectivity.csv")
    assert {"control accuracy min", "control accuracy max"} <= set(shown.columns)
    curves = pd.read_csv(tmp_path / "out" / "figures" / "selectivity-toy-ab.csv")
    assert not control_rows(curves["attribute"]).any()  # controls are the reference, never a panel
    svg = (tmp_path / "out" / "figures" / "selectivity-toy-ab.svg").read_text()
    assert (
        "highest control less the controls&#39; mean" in svg
        or "highest control less the controls' mean" in svg
    )


def test_three_controls_are_probed_with_labels_of_their_own(tiny_faces, tmp_path):
    study = _study(tmp_path, tiny_faces, controls=3)
    run_study(load_config(study), tmp_path / "run")
    names = control_names(3)
    labels = pd.read_parquet(tmp_path / "run" / "labels.parquet").set_index("image_id")
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (labels[a] != labels[b]).any(), (a, b)
    val = _val_layer(read_table(tmp_path / "run", "results"))
    assert sorted(a for a in set(val["attribute"]) if is_control(a)) == names
    controls = val[control_rows(val["attribute"])].groupby("layer")["accuracy"]
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "tables" / "selectivity.csv")
    assert (table["controls"] == 3).all()
    np.testing.assert_allclose(table["control accuracy min"], table["layer"].map(controls.min()), atol=1e-12)
    np.testing.assert_allclose(table["control accuracy max"], table["layer"].map(controls.max()), atol=1e-12)
    np.testing.assert_allclose(table["control accuracy"], table["layer"].map(controls.mean()), atol=1e-12)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (0, "data.controls must be 1 to 20"),
        (21, "data.controls must be 1 to 20"),
        ("3", "whole number"),
    ],
)
def test_a_bad_controls_value_is_a_one_line_error(tiny_faces, tmp_path, value, says):
    study = _study(tmp_path, tiny_faces, controls=value)
    proc = run_cli("run", str(study), "--out", str(tmp_path / "run"), timeout=120)
    assert_one_line_error(proc, "controls", says)
    assert not (tmp_path / "run").exists()
