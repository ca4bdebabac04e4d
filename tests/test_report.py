"""`faceprobe report` and `compare`: every figure and table of the thesis, holding the run's own numbers.

The run is the real quick demo plus small real computations (PLS, probes, a VIP study, an ablation) on
synthetic layers, so the tables hold numbers the library produced, never hand-typed ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faceprobe import Probe
from faceprobe.errors import FaceprobeError
from faceprobe.report.groups import read_groups
from faceprobe.report.html import _SCRIPT, build_report
from faceprobe.report.run import load_run
from faceprobe.results import to_frame, write_results
from faceprobe.studies.layerwise import AttributeRows, probe_layer

SHAPE = (16, 2, 2)
KINDS = ("conv", "residual", "block", "residual", "block", "fc")
MODELS = (("toy-face", "checkpoint:faces", 1.0), ("toy-random", "random", 0.35))


def synthetic_run(
    out: Path, attributes: tuple[str, ...] = ("Smiling", "Bald", "Control_Random"), k: int = 8
) -> Path:
    """A small real run on synthetic layers: results with val and test rows, VIP study, ablation, baseline
    (``k``: the top-k VIP channels and neurons probed).

    Each attribute is planted in its own features, more strongly after a skip (block) than inside a
    residual branch; Control_Random is planted nowhere. Results go to a folder of Parquet parts.
    """
    rng = np.random.default_rng(0)
    n = 360
    labels = {a: rng.integers(0, 2, n) for a in attributes}
    planted = np.zeros((n, int(np.prod(SHAPE))))
    for i, attribute in enumerate(a for a in attributes if a != "Control_Random"):
        planted[:, 4 * i : 4 * i + 4] = labels[attribute][:, None] - 0.5
    train, val, test = np.arange(0, 180), np.arange(180, 270), np.arange(270, 360)
    sel = {
        a: AttributeRows(train, val, y[train], y[val], test=test, y_test=y[test]) for a, y in labels.items()
    }
    vip_rows, kept = [], {}
    for part, (model, weights, gain) in enumerate(MODELS):
        rows = []
        for depth, kind in enumerate(KINDS):
            strength = gain * (1.5 if kind == "block" else 0.8) * (1 + depth / 3)
            X = (rng.normal(size=planted.shape) + strength * planted).astype(np.float32)
            probes = probe_layer(X, SHAPE, sel, k=k, single_units=True, vip_study=12)
            meta = {"model": model, "layer": f"stage{depth}.{kind}", "depth": depth}
            rows += [
                {
                    **meta,
                    **r,
                    "n_features": X.shape[1],
                    "architecture": "toynet",
                    "weights": weights,
                    "kind": kind,
                }
                for r in probes.rows
            ]
            vip_rows += [{**meta, **r} for r in probes.vip_rows]
            kept[model, depth] = X, probes.vips
        write_results(to_frame(rows), out / "results.parquet" / f"part-{part}.parquet")
    write_results(to_frame(vip_rows, "vip_study"), out / "vip_study.parquet")
    write_results(to_frame(_ablation(kept, sel), "ablation"), out / "ablation.parquet")
    whole = np.hstack([kept["toy-face", d][0] for d in range(len(KINDS))])
    baseline = [
        {
            "attribute": a,
            "accuracy": Probe(8).fit(whole[train], y[train]).score(whole[test], y[test]),
            "split": "test",
            "source": "PLS+QDA on all layers",
        }
        for a, y in labels.items()
    ]
    write_results(to_frame(baseline, "baseline"), out / "baseline.parquet")
    manifest = {
        "faceprobe_version": "0.1.0",
        "created": "synthetic fixture",
        "config": {"probe": {"top_k": k, "components": 8}},
        "models": [
            {"name": m, "architecture": "toynet", "weights": w, "seed": 0, "digest": f"sha256:{m}-digest"}
            for m, w, _ in MODELS
        ],
        "data": {
            "spec": "synthetic",
            "attributes": list(attributes),
            "n_train": 180,
            "n_val": 90,
            "n_test": 90,
        },
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "pandas": pd.__version__},
        "git_revision": "fixture-revision",
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _ablation(kept: dict, sel: dict[str, AttributeRows]) -> list[dict]:
    """Zero the top 25% VIP neurons of toy-face's depth-2 layer; probe a later layer made from it, on val and
    test (each ablated probe against the unablated probe of its own split)."""
    X, vips = kept["toy-face", 2]
    mix = np.random.default_rng(1).normal(size=(X.shape[1], X.shape[1])).astype(np.float32)
    later = lambda A: np.maximum(A @ mix, 0)  # noqa: E731
    rows = []
    for attribute, vip in vips.items():
        top = np.argsort(vip)[-len(vip) // 4 :]
        ablated = X.copy()
        ablated[:, top] = 0
        one = {attribute: sel[attribute]}
        before = {
            (r["representation"], r["split"]): r["accuracy"] for r in probe_layer(later(X), SHAPE, one).rows
        }
        for r in probe_layer(later(ablated), SHAPE, one).rows:
            unablated = before[r["representation"], r["split"]]
            rows.append(
                {
                    "model": "toy-face",
                    "ablated_layer": "stage2.block",
                    "ablated_depth": 2,
                    "fraction": 0.25,
                    "n_ablated": len(top),
                    "attribute": attribute,
                    "layer": "later",
                    "depth": 3,
                    "representation": r["representation"],
                    "split": r["split"],
                    "accuracy": r["accuracy"],
                    "baseline_accuracy": unablated,
                    "drop": unablated - r["accuracy"],
                }
            )
    return rows


@pytest.fixture(scope="module")
def run_dir(quick_demo, tmp_path_factory) -> Path:
    """The real quick demo's results (two small CNNs) joined by the synthetic run's tables."""
    demo, _ = quick_demo
    run = synthetic_run(tmp_path_factory.mktemp("run") / "run")
    results = pd.read_parquet(demo / "run" / "results.parquet")
    trained = results[results["model"].str.startswith("demo-face")]  # the trained network, as one model
    trained = trained[trained["attribute"] != "Big_Nose"]  # no attribute of the Primary biometrics group
    trained = trained[trained["metric"] == "accuracy"]  # the thesis's views; other kinds: test_demo.py
    trained = trained.assign(model="small-synthetic", variant="small-synthetic")
    trained.to_parquet(run / "results.parquet" / "part-demo.parquet", index=False)
    return run


@pytest.fixture(scope="module")
def report_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    proc = run_cli("report", str(run_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "faceprobe.cli", *args], capture_output=True, text=True, timeout=600
    )


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


FIGURES = (
    "heatmap-small-synthetic",  # the summary's attribute x layer heat maps
    "heatmap-toy-face",
    "heatmap-toy-random",
    "depth-small-synthetic",
    "depth-toy-face",
    "depth-toy-random",
    "groups-small-synthetic",
    "groups-toy-face",
    "groups-toy-random",
    "residual-small-synthetic",  # the demo's rows carry each layer's kind, so its sawtooth is drawn too
    "residual-toy-face",
    "residual-toy-random",
    "weight-origins",
    "vip",
)
TABLES = (
    "summary-best-layer",
    "best-units",
    "representation-averages",
    "ablation-drops",
    "vip-correlations",
    "vip-projections",
)


@pytest.mark.slow
def test_every_figure_and_table_is_written_and_embedded(report_dir):
    page = (report_dir / "index.html").read_text()
    for name in FIGURES:
        for suffix in ("png", "svg"):
            assert (report_dir / "figures" / f"{name}.{suffix}").stat().st_size > 500, (name, suffix)
        assert len(pd.read_csv(report_dir / "figures" / f"{name}.csv")) >= 2, name  # the numbers plotted
        assert f'href="figures/{name}.svg"' in page
    for name in TABLES:
        assert (report_dir / "tables" / f"{name}.csv").exists() and (
            report_dir / "tables" / f"{name}.md"
        ).exists()
    assert page.count('<img src="data:image/png;base64,') == len(FIGURES)
    assert "http://" not in page and "https://" not in page
    assert page.count("<script") == 1 and f"<script>{_SCRIPT}</script>" in page  # its own, allowed by hash
    svg = (report_dir / "figures" / "depth-toy-face.svg").read_text()
    assert "Control_Random (random labels)" in svg and "stage2.block" in svg and "depth and name" in svg


@pytest.mark.slow
def test_depth_figures_plot_the_runs_validation_rows(run_dir, report_dir):
    results = pd.read_parquet(run_dir / "results.parquet")
    for model in ("small-synthetic", "toy-face"):
        plotted = read(report_dir, f"figures/depth-{model}.csv")
        expected = results[
            (results["model"] == model)
            & (results["split"] == "val")
            & results["representation"].isin(["layer", "channels", "neurons"])
        ]
        merged = expected.merge(
            plotted, on=["attribute", "representation", "depth"], suffixes=("", "_plotted")
        )
        assert len(merged) == len(expected) == len(plotted)
        np.testing.assert_allclose(merged["accuracy_plotted"], merged["accuracy"])


@pytest.mark.slow
def test_best_units_are_chosen_on_val_and_reported_on_test_beside_the_baseline(run_dir, report_dir):
    results = pd.read_parquet(run_dir / "results.parquet")
    baseline = pd.read_parquet(run_dir / "baseline.parquet").set_index("attribute")["accuracy"]
    table = read(report_dir, "tables/best-units.csv")
    page = (report_dir / "index.html").read_text()
    toy = results[results["model"] == "toy-face"]
    for attribute in ("Smiling", "Bald"):
        for representation in ("layer", "channels", "neurons", "channel", "neuron"):
            rows = toy[(toy["attribute"] == attribute) & (toy["representation"] == representation)]
            val = rows[rows["split"] == "val"]
            best = val.loc[val["accuracy"].idxmax()]
            on_test = rows[
                (rows["split"] == "test") & (rows["layer"] == best["layer"]) & (rows["unit"] == best["unit"])
            ]
            row = table[(table["source"] == "toy-face") & (table["attribute"] == attribute)].iloc[0]
            layer = "best layer" if representation == "layer" else f"{representation} layer"
            assert row[layer] == best["layer"]
            assert row[f"{representation} accuracy"] == pytest.approx(on_test["accuracy"].item())
            assert f"{100 * on_test['accuracy'].item():.1f}" in page
        assert row["gap"] == pytest.approx(baseline[attribute] - row["layer accuracy"])
    gaps = table[table["source"] == "toy-face"]["gap"]
    assert list(gaps) == sorted(gaps)
    demo = table[table["source"] == "small-synthetic"]
    assert set(demo["split"]) == {"test"}  # the demo scores its test identities: units reported on test
    averages = read(report_dir, "tables/representation-averages.csv").set_index(["source", "representation"])
    real = table[(table["source"] == "toy-face") & (table["attribute"] != "Control_Random")]
    assert averages.loc[("toy-face", "neuron"), "accuracy"] == pytest.approx(real["neuron accuracy"].mean())


@pytest.mark.slow
def test_ablation_vip_weights_and_residual_views_hold_the_runs_numbers(run_dir, report_dir):
    ablation = pd.read_parquet(run_dir / "ablation.parquet")
    drops = read(report_dir, "tables/ablation-drops.csv").set_index(["representation", "split"])
    real = ablation[ablation["attribute"] != "Control_Random"]
    assert set(real["split"]) == {"val", "test"}
    for (representation, split), group in real.groupby(["representation", "split"]):
        assert drops.loc[(representation, split), "drop"] == pytest.approx(group["drop"].mean())

    vip = pd.read_parquet(run_dir / "vip_study.parquet")
    r = read(report_dir, "tables/vip-correlations.csv").set_index(["source", "measure"])
    face = vip[(vip["model"] == "toy-face") & (vip["attribute"] != "Control_Random")]
    each = face.groupby(["layer", "attribute"])[["vip", "accuracy"]].apply(
        lambda g: g["vip"].corr(g["accuracy"])
    )
    assert r.loc[("toy-face", "vip"), "mean r"] == pytest.approx(each.mean())
    assert r.loc[("toy-face", "vip"), "projections"] == len(each) == 2 * len(KINDS)
    svg = (report_dir / "figures" / "vip.svg").read_text()
    assert f"mean per-projection r = {each.mean():.3f}" in svg

    results = pd.read_parquet(run_dir / "results.parquet")
    origins = read(report_dir, "figures/weight-origins.csv")
    layer = results[
        (results["split"] == "val") & (results["representation"] == "layer") & (results["weights"] != "")
    ]
    expected = layer[layer["attribute"] != "Control_Random"].groupby(["weights", "depth"])["accuracy"].mean()
    plotted = origins.set_index(["series", "depth"])["accuracy"]
    np.testing.assert_allclose(plotted.sort_index(), expected.sort_index())

    residual = read(report_dir, "figures/residual-toy-face.csv")
    assert {"block", "residual"} <= set(residual["kind"])


@pytest.mark.slow
def test_manifest_and_groups_are_shown(report_dir):
    page = (report_dir / "index.html").read_text()
    for fact in ("sha256:toy-face-digest", "fixture-revision", np.__version__, "n_test", "checkpoint:faces"):
        assert fact in page
    groups = read(report_dir, "figures/groups-toy-face.csv")
    assert set(groups["panel"]) == {"Hair colours and baldness", "Non-biometric"}
    assert "groups without any attribute in this run: Primary biometrics<" in page


@pytest.mark.slow
def test_compare_overlays_runs(run_dir, tmp_path):
    other = synthetic_run(tmp_path / "other")
    proc = run_cli("compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    plotted = read(tmp_path / "cmp", "figures/depth-layer.csv")
    assert {"run: small-synthetic", "run: toy-face", "other: toy-face"} <= set(plotted["series"])
    origins = read(tmp_path / "cmp", "figures/weight-origins.csv")
    assert {"run: random", "other: checkpoint:faces"} <= set(origins["series"])
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "<h3>run</h3>" in page and "<h3>other</h3>" in page


def test_legends_name_the_top_k_the_run_probed(tmp_path):
    run = synthetic_run(tmp_path / "run", k=4)
    proc = run_cli("report", str(run), "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    legend = (tmp_path / "report" / "figures" / "depth-toy-face.svg").read_text()
    assert "top-4 VIP channels" in legend and "top-4 VIP neurons" in legend and "top-8" not in legend
    assert "whole layer (PLS+QDA)" in legend


def test_missing_tables_are_named_on_the_page(tmp_path):
    run = synthetic_run(tmp_path / "run")
    for name in ("ablation.parquet", "vip_study.parquet", "manifest.json"):
        path = run / name
        path.unlink()
    index = build_report([load_run(run)], tmp_path / "out")
    page = index.read_text()
    assert "ablation.parquet is missing" in page and "vip_study.parquet is missing" in page
    assert "manifest.json is missing" in page and "Not in this run: vip_study, ablation" in page
    assert not (tmp_path / "out" / "figures" / "vip.png").exists()


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(FaceprobeError, match="not a folder"):
        load_run(tmp_path / "absent")
    with pytest.raises(FaceprobeError, match=r"holds none of results\.parquet"):
        load_run(tmp_path)
    (tmp_path / "groups.json").write_text('{"Hair": "Black_Hair"}')
    with pytest.raises(FaceprobeError, match="must map group names to lists"):
        read_groups(tmp_path / "groups.json")
    proc = run_cli("report", str(tmp_path / "absent"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_groups_are_configurable(tmp_path):
    run = synthetic_run(tmp_path / "run")
    (tmp_path / "groups.json").write_text(json.dumps({"Mine": ["Bald", "Smiling"]}))
    proc = run_cli("report", str(run), "--groups", str(tmp_path / "groups.json"))
    assert proc.returncode == 0, proc.stderr
    plotted = read(run / "report", "figures/groups-toy-face.csv")
    assert set(plotted["panel"]) == {"Mine"} and set(plotted["attribute"]) == {"Bald", "Smiling"}


@pytest.mark.parametrize("command", ["report", "compare"])
def test_help_teaches(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example: faceprobe" in " ".join(proc.stdout.split())
