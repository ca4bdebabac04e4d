"""What the report's numbers mean, on small hand-built tables whose answers are known.

Each test pins one definition the thesis fixes (section 5.2-5.3): ablation drops per split, Fig. 5.9's
mean per-projection r, means over seeds, best channels from convolutional layers only, the multitask
baseline and gap, and the notes where a run uses fewer settings than the thesis.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from faceprobe.cli import app
from faceprobe.report.html import build_report
from faceprobe.report.run import load_run
from faceprobe.report.tables import (
    POOLED,
    ablation_drops,
    best_units,
    representation_averages,
    vip_correlations,
    vip_projections,
)
from faceprobe.results import to_frame, write_results

CONTROL = "Control_Random"
#: (layer, kind): two convolutional layers, then a 1-D one (no channel rows, as the runner writes them).
LAYERS = (("conv1", "conv"), ("block1", "block"), ("fc", "fc"))
VARIANT = "toynet/imagenet#ab12cd34"


def result_rows(model: str, gain: float, splits: tuple[str, ...] = ("val",), variant: str = "") -> list[dict]:
    """Result rows of one model: accuracy rises with depth (plus ``gain``), test 1 point above val;
    Control_Random stays at chance. The fc layer has no channels / channel rows."""
    rows = []
    for depth, (layer, kind) in enumerate(LAYERS):
        representations = ("layer", "neurons", "neuron")
        if kind != "fc":
            representations += ("channels", "channel")
        for attribute in ("Smiling", "Bald", CONTROL):
            for representation in representations:
                for split in splits:
                    accuracy = 0.6 + gain + 0.05 * depth + (0.01 if split == "test" else 0)
                    rows.append(
                        {
                            "model": model,
                            "layer": layer,
                            "depth": depth,
                            "attribute": attribute,
                            "representation": representation,
                            "k": 8,
                            "unit": 3 if representation in ("channel", "neuron") else -1,
                            "split": split,
                            "accuracy": 0.5 if attribute == CONTROL else accuracy,
                            "n_train": 10,
                            "n_eval": 10,
                            "architecture": "toynet",
                            "weights": "imagenet",
                            "kind": kind,
                            "variant": variant,
                        }
                    )
    return rows


def seeded_results(gains: tuple[float, ...] = (0.0, 0.1), splits: tuple[str, ...] = ("val",)) -> pd.DataFrame:
    """One variant trained from ``len(gains)`` seeds, as load_run gives it (source and variant columns)."""
    rows = [r for seed, g in enumerate(gains) for r in result_rows(f"{VARIANT}/s{seed}", g, splits, VARIANT)]
    frame = to_frame(rows)
    return frame.assign(source=frame["model"].astype(str), variant=frame["variant"].astype(str))


def write_run(out: Path, results: list[dict], manifest: dict | None = None) -> Path:
    write_results(to_frame(results), out / "results.parquet")
    if manifest is not None:
        (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def baseline_rows(split: str = "test") -> pd.DataFrame:
    rows = [
        {"attribute": a, "accuracy": acc, "split": split, "source": "multitask resnet50"}
        for a, acc in (("Smiling", 0.95), ("Bald", 0.8), (CONTROL, 0.5))
    ]
    return to_frame(rows, "baseline")


# 1. Ablation: each split against its own unablated baseline, val and test never averaged together.


def ablation_rows(split: str, drop: float) -> list[dict]:
    return [
        {
            "model": f"{VARIANT}/s0",
            "ablated_layer": "block1",
            "ablated_depth": 1,
            "fraction": 0.05,
            "n_ablated": 4,
            "attribute": attribute,
            "layer": "fc",
            "depth": 2,
            "representation": "layer",
            "split": split,
            "accuracy": 0.9 - drop,
            "baseline_accuracy": 0.9,
            "drop": drop if attribute != CONTROL else 0.3,
            "variant": VARIANT,
        }
        for attribute in ("Smiling", "Bald", CONTROL)
    ]


def test_ablation_drops_are_reported_per_split(tmp_path):
    frame = to_frame(ablation_rows("val", 0.02) + ablation_rows("test", 0.08), "ablation")
    table = ablation_drops(frame.assign(source=frame["model"].astype(str)))
    assert list(table["split"]) == ["val", "test"]
    assert table["drop"].tolist() == pytest.approx([0.02, 0.08])
    assert table["probes"].tolist() == [2, 2]  # Control_Random left out

    write_results(frame, tmp_path / "run" / "ablation.parquet")
    page = build_report([load_run(tmp_path / "run")], tmp_path / "out").read_text()
    shown = pd.read_csv(tmp_path / "out" / "tables" / "ablation-drops.csv")
    assert list(shown["split"]) == ["val", "test"]
    assert shown["drop"].tolist() == pytest.approx([0.02, 0.08])
    assert "val and test rows apart" in page


def test_older_runs_are_backfilled_not_refused(tmp_path):
    old = to_frame(ablation_rows("val", 0.02), "ablation").drop(columns=["split", "variant"])
    write_results(old, tmp_path / "ablation.parquet")
    results = to_frame(result_rows("net/s3", 0.0) + result_rows("plain", 0.0)).drop(columns="variant")
    write_results(results, tmp_path / "results.parquet")
    vip = pd.DataFrame(vip_projection("conv1", "Smiling", [1, 2], [0.6, 0.7], [1, 2]))
    vip = vip.assign(model="net/s3", depth=0, neuron=[0, 1], n_train=10, n_eval=10)
    old_vip = to_frame(vip.to_dict("records"), "vip_study").drop(columns="variant")
    write_results(old_vip, tmp_path / "vip_study.parquet")
    run = load_run(tmp_path)
    assert set(run.table("vip_study")["variant"]) == {"net"}
    assert set(run.table("ablation")["split"]) == {"val"}
    assert set(run.table("ablation")["variant"]) == {VARIANT}
    variants = run.table("results").groupby("model")["variant"].unique()
    assert variants.map(list).to_dict() == {"net/s3": ["net"], "plain": ["plain"]}


# 2. Fig. 5.9: one r per projection, averaged; the pooled r only as a labelled extra.


def vip_projection(layer: str, attribute: str, vip: list, accuracy: list, mean_positive: list) -> list[dict]:
    """The VIP study rows of one PLS projection: its sampled neurons."""
    columns = {"vip": vip, "accuracy": accuracy, "mean_positive": mean_positive}
    frame = pd.DataFrame(columns).assign(source="m", variant="m", layer=layer, attribute=attribute)
    return frame.to_dict("records")


def test_vip_correlation_is_the_mean_of_per_projection_r_without_control():
    # within each projection accuracy rises with VIP (r = 1), but the projection with the larger VIPs has the
    # lower accuracies, so all neurons pooled give a negative r
    rows = vip_projection("conv1", "Smiling", [1, 2, 3, 4], [0.60, 0.61, 0.62, 0.63], [1, 2, 3, 4])
    rows += vip_projection("conv2", "Bald", [10, 11, 12, 13], [0.50, 0.51, 0.52, 0.53], [4, 3, 2, 1])
    rows += vip_projection("conv1", CONTROL, [1, 2, 3, 4], [0.6, 0.5, 0.4, 0.3], [1, 2, 3, 4])
    vip = pd.DataFrame(rows)
    table = vip_correlations(vip).set_index("measure")
    real = vip[vip["attribute"] != CONTROL]
    pooled = np.corrcoef(real["vip"], real["accuracy"])[0, 1]
    assert pooled < -0.5
    assert table.loc["vip", "mean r"] == pytest.approx(1.0)
    assert np.isclose(table.loc["vip", "std r"], 0.0)
    assert table.loc["vip", POOLED] == pytest.approx(pooled)
    assert table.loc["vip", ["projections", "neurons"]].tolist() == [2, 8]
    assert table.loc["mean_positive", "mean r"] == pytest.approx(0.0)  # +1 and -1
    assert table.loc["mean_positive", "std r"] == pytest.approx(np.sqrt(2))
    assert POOLED == "pooled r (not the thesis statistic)"


def test_each_projections_r_is_pearsons_over_its_neurons_with_a_known_accuracy():
    rng = np.random.default_rng(0)
    rows = []
    for layer, attribute in itertools.product(("conv1", "conv2", "fc"), ("Smiling", "Bald", CONTROL)):
        accuracy = rng.uniform(0.4, 0.9, 30)
        accuracy[rng.random(30) < 0.2] = np.nan  # a neuron whose probe failed
        rows += vip_projection(
            layer, attribute, list(rng.gamma(1.0, size=30)), list(accuracy), list(rng.normal(size=30))
        )
    rows += vip_projection("conv3", "Smiling", [2.0, 2.0, 2.0], [0.5, 0.6, 0.7], [1, 2, 3])  # no VIP spread
    rows += vip_projection("conv3", "Bald", [1.0, 2.0, 3.0], [0.5, np.nan, np.nan], [1, 2, 3])  # one pair
    vip = pd.DataFrame(rows)
    table = vip_projections(vip).set_index(["layer", "attribute"])
    for (layer, attribute), neurons in vip.groupby(["layer", "attribute"]):
        row = table.loc[(layer, attribute)]
        assert row["neurons"] == len(neurons)
        for measure in ("vip", "mean_positive"):
            known = neurons.dropna(subset=[measure, "accuracy"])
            spread = len(known) > 1 and known[measure].nunique() > 1
            expected = np.corrcoef(known[measure], known["accuracy"])[0, 1] if spread else np.nan
            assert row[f"r({measure}, accuracy)"] == pytest.approx(expected, nan_ok=True), (layer, attribute)
    assert np.isnan(table.loc[("conv3", "Smiling"), "r(vip, accuracy)"])
    assert np.isnan(table.loc[("conv3", "Bald"), "r(mean_positive, accuracy)"])


# 3. Means over seeds: the thesis reports means over runs.


def test_tables_average_over_the_seeds_of_a_variant():
    results = seeded_results(gains=(0.0, 0.1))
    best = best_units(results, over_seeds=True).set_index("attribute")
    assert set(best["source"]) == {VARIANT} and best["seeds"].tolist() == [2, 2, 2]
    assert best.loc["Smiling", "layer accuracy"] == pytest.approx(0.75)  # fc: 0.70 and 0.80
    assert best.loc["Smiling", "layer accuracy std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert best.loc["Smiling", "best layer"] == "fc"

    per_seed = best_units(results)
    assert set(per_seed["source"]) == {f"{VARIANT}/s0", f"{VARIANT}/s1"}
    averages = representation_averages(per_seed, over_seeds=True).set_index("representation")
    assert averages.loc["layer", "accuracy"] == pytest.approx(0.75)
    assert averages.loc["layer", "accuracy std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))

    ablation = to_frame(ablation_rows("val", 0.02), "ablation")
    ablation = pd.concat([ablation, ablation.assign(model=f"{VARIANT}/s1", drop=0.06)])
    drops = ablation_drops(ablation.assign(source=ablation["model"].astype(str)), over_seeds=True)
    assert drops[["source", "seeds"]].values.tolist() == [[VARIANT, 2]]
    assert drops["drop"].item() == pytest.approx(0.04)
    assert drops["drop std"].item() == pytest.approx(np.std([0.02, 0.06], ddof=1))


def test_one_seed_per_variant_changes_only_the_label():
    results = seeded_results(gains=(0.0,))
    averaged, per_seed = best_units(results, over_seeds=True), best_units(results)
    assert set(averaged["source"]) == {VARIANT}
    assert list(averaged.columns) == [c for c in per_seed.columns if c != "variant"]
    numbers = [c for c in averaged.columns if c.endswith("accuracy")]
    np.testing.assert_allclose(averaged[numbers].to_numpy(float), per_seed[numbers].to_numpy(float))


def test_depth_figures_show_the_mean_over_seeds_and_each_seed_apart(tmp_path):
    rows = [
        r for seed, g in enumerate((0.0, 0.1)) for r in result_rows(f"{VARIANT}/s{seed}", g, variant=VARIANT)
    ]
    index = build_report([load_run(write_run(tmp_path / "run", rows))], tmp_path / "out")
    page = index.read_text()
    figures = tmp_path / "out" / "figures"
    curves = pd.read_csv(figures / "depth-toynet-imagenet-ab12cd34.csv")
    fc = curves[
        (curves["attribute"] == "Smiling") & (curves["layer"] == "fc") & (curves["series"] == "layer")
    ]
    assert fc["accuracy"].item() == pytest.approx(0.75) and fc["seeds"].item() == 2
    assert fc["std"].item() == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert "mean ± std over 2 seeds (bars)" in page and "<details>" in page
    for seed in (0, 1):
        assert (figures / f"depth-toynet-imagenet-ab12cd34-s{seed}.png").exists()
    for name in ("best-units", "best-units-per-seed", "representation-averages-per-seed"):
        assert (tmp_path / "out" / "tables" / f"{name}.csv").exists()
    svg = (figures / "depth-toynet-imagenet-ab12cd34.svg").read_text()
    assert "bars: ± std over seeds" in svg and "shaded: 95% interval (Wilson" in svg


# 4. and 5. Best channels from convolutional layers only; column names that read naturally.


def test_one_dimensional_layers_have_no_channels_and_columns_read_naturally(tmp_path):
    only_fc = [r for r in result_rows("mlp/s0", 0.0, ("val", "test")) if r["layer"] == "fc"]
    rows = result_rows("cnn/s0", 0.0, ("val", "test")) + only_fc
    run = write_run(tmp_path / "run", rows)
    page = build_report([load_run(run)], tmp_path / "out").read_text()
    best = pd.read_csv(tmp_path / "out" / "tables" / "best-units.csv").set_index(["source", "attribute"])
    assert best.loc[("cnn", "Smiling"), "best layer"] == "fc"
    assert best.loc[("cnn", "Smiling"), "channels layer"] == "block1"  # the deepest layer with channels
    assert best.loc[("cnn", "Smiling"), "channel accuracy"] == pytest.approx(0.66)  # block1 on test
    assert best.loc[("mlp", "Smiling"), ["channels layer", "channel accuracy"]].isna().all()
    assert not best.isna().all().any()  # no empty column
    averages = pd.read_csv(tmp_path / "out" / "tables" / "representation-averages.csv")
    assert set(averages[averages["source"] == "mlp"]["representation"]) == {"layer", "neurons", "neuron"}
    assert "best channel: convolutional layers only (1-D outputs have no channels; thesis 5.2)" in page
    for csv in (tmp_path / "out" / "tables").glob("*.csv"):
        for column in pd.read_csv(csv, nrows=0).columns:
            assert not re.search(r"\b(\w+) \1\b", column), (csv.name, column)
    for csv in (tmp_path / "out" / "figures").glob("*.csv"):
        assert not pd.read_csv(csv).isna().all().any(), csv.name


# 6. The multitask baseline from `faceprobe train attributes`, and the gap.


@pytest.mark.parametrize("command", ["report", "compare"])
def test_baseline_option_adds_baseline_and_gap(tmp_path, command):
    run = write_run(tmp_path / "run", result_rows(f"{VARIANT}/s0", 0.0, ("val", "test"), VARIANT))
    trained = tmp_path / "train-attributes"
    write_results(baseline_rows(), trained / "baseline.parquet")
    out = tmp_path / "out"
    options = ["--out", str(out)]
    plain = CliRunner().invoke(app, [command, str(run), *options])
    assert plain.exit_code == 0, plain.output
    assert "gap" not in pd.read_csv(out / "tables" / "best-units.csv")
    for given in (trained / "baseline.parquet", trained):  # the file, or the folder holding it
        result = CliRunner().invoke(app, [command, str(run), *options, "--baseline", str(given)])
        assert result.exit_code == 0, result.output
        best = pd.read_csv(out / "tables" / "best-units.csv").set_index("attribute")
        assert best.loc["Smiling", "baseline"] == pytest.approx(0.95)
        assert best.loc["Smiling", "gap"] == pytest.approx(0.95 - 0.71)  # fc on test
        assert best.loc["Bald", "gap"] == pytest.approx(0.8 - 0.71)
        assert best.index.get_loc("Bald") < best.index.get_loc("Smiling")  # smallest gap first (Table 5.2)
        assert "baseline.parquet is missing" not in (out / "index.html").read_text()


def test_baseline_option_rejects_a_wrong_file(tmp_path):
    run = write_run(tmp_path / "run", result_rows("m", 0.0))
    result = CliRunner().invoke(app, ["report", str(run), "--baseline", str(tmp_path / "absent")])
    assert result.exit_code != 0 and "faceprobe train attributes" in str(result.exception)


# 7. Notes where the run uses fewer settings than the thesis.


def manifest(test: int, seeds: list[int]) -> dict:
    config = {
        "data": {"spec": "synthetic", "test": test},
        "models": [{"architecture": "toynet", "seeds": seeds}],
    }
    return {"config": config}


def test_notes_say_where_the_run_uses_fewer_settings_than_the_thesis(tmp_path):
    reduced = write_run(tmp_path / "reduced", result_rows("m", 0.0), manifest(test=0, seeds=[0]))
    page = build_report([load_run(reduced)], tmp_path / "out-reduced").read_text()
    for text in (
        "units chosen and reported on the validation split (the run scored no test split; thesis: chosen on "
        "val, reported on test)",
        "one seed per model; the thesis averages over runs",
    ):
        assert f'<p class="note">{text}</p>' in page
    full = write_run(
        tmp_path / "full", result_rows("m", 0.0, ("val", "test")), manifest(test=-1, seeds=[0, 1])
    )
    page = build_report([load_run(full)], tmp_path / "out-full").read_text()
    assert "the run scored no test split" not in page and "one seed per model" not in page
    page = build_report([load_run(reduced), load_run(full)], tmp_path / "out-both").read_text()
    assert '<p class="note">reduced: one seed per model; the thesis averages over runs</p>' in page
