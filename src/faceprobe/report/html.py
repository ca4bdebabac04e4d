"""The report: one self-contained HTML page (figures inline, no scripts, no network) plus files to reuse.

``build_report`` writes ``index.html`` with every figure embedded as a PNG data URI, and beside it
``figures/`` (PNG, SVG and the CSV of plotted numbers) and ``tables/`` (CSV and Markdown). Given several
runs it overlays them (``faceprobe compare``). Every name from the data is escaped, and a Content Security
Policy forbids scripts and remote loads, so an attribute called ``<script>`` stays text.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from faceprobe.atomic import atomic_write_text
from faceprobe.report.figures import (
    REPRESENTATION_STYLE,
    depth_curves,
    draw_panels,
    draw_vip,
    mean_over_seeds,
    save_figure,
)
from faceprobe.report.groups import DEFAULT_GROUPS
from faceprobe.report.run import Run, combine_runs
from faceprobe.report.tables import (
    CONTROL,
    ablation_drops,
    best_units,
    representation_averages,
    table_html,
    vip_correlations,
    vip_projections,
    write_table,
)

__all__ = ["build_report"]

#: Table 5.2's note when a run scored no test split.
_NO_TEST_NOTE = (
    "units chosen and reported on the validation split (the run scored no test split; thesis: chosen on val, "
    "reported on test)"
)
#: What Table 5.2's best channel means (the runner writes channel rows for layers with spatial extent only).
_CHANNEL_NOTE = "best channel: convolutional layers only (1-D outputs have no channels; thesis 5.2)"

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1500px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.5rem}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
.missing{background:#fff4e0;padding:.4rem .8rem;border-left:4px solid #E69F00}
.note{background:#eef5fb;padding:.4rem .8rem;border-left:4px solid #0072B2}
details{margin:.5rem 0 1rem}summary{cursor:pointer;font-size:.9rem}
table{border-collapse:collapse;font-size:.8rem;margin:.5rem 0 1rem}
td,th{border:1px solid #ddd;padding:2px 6px}
th{background:#f3f3f3;position:sticky;top:0}tbody tr:nth-child(even){background:#fafafa}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:.8rem}nav a{margin-right:1rem}
"""


@dataclass
class _Page:
    """The page under construction: sections in order, and where their files go."""

    out: Path
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)

    def section(self, heading: str) -> list[str]:
        parts: list[str] = []
        self.sections.append((_slug(heading), heading, parts))
        return parts

    def stem(self, folder: str, name: str) -> Path:
        slug, n = _slug(name), 1
        while f"{folder}/{slug}" in self._names:
            n += 1
            slug = f"{_slug(name)}-{n}"
        self._names.add(f"{folder}/{slug}")
        return self.out / folder / slug

    def figure(self, parts: list[str], name: str, fig, data: pd.DataFrame, caption: str) -> None:
        paths = save_figure(fig, self.stem("figures", name), data)
        uri = "data:image/png;base64," + base64.b64encode(paths["png"].read_bytes()).decode()
        links = " · ".join(f'<a href="figures/{p.name}">{s.upper()}</a>' for s, p in paths.items())
        parts.append(
            f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({links})</figcaption></figure>"
        )

    def table(self, parts: list[str], name: str, frame: pd.DataFrame, caption: str) -> None:
        csv, md = write_table(frame, self.stem("tables", name))
        parts.append(
            f"<h3>{html.escape(caption)}</h3><p><a href='tables/{csv.name}'>CSV</a> · "
            f"<a href='tables/{md.name}'>Markdown</a></p>{table_html(frame)}"
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "x"


def _missing(parts: list[str], text: str) -> None:
    parts.append(f'<p class="missing">{html.escape(text)}</p>')


def build_report(
    runs: list[Run], out: str | Path, groups: Mapping[str, tuple[str, ...]] = DEFAULT_GROUPS
) -> Path:
    """Write the report of one run, or the overlay of several, into ``out``; returns ``out/index.html``.

    Views are averaged over the seeds of each variant (the thesis reports means over runs), with the spread
    over seeds shaded or in ``std`` columns; where a variant has several seeds its per-seed views follow.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = runs[0] if len(runs) == 1 else combine_runs(runs)
    compare = len(runs) > 1
    page = _Page(out)
    results = run.table("results")
    sections = page.section("Accuracy over depth"), page.section("Attribute groups")
    sections += page.section("Residual blocks"), page.section("Weight origins")
    if results is None:
        for parts in sections:
            _missing(parts, "results.parquet is missing from this run: no depth views.")
    else:
        val = results[results["split"] == "val"].dropna(subset=["accuracy"])
        for text in _setting_notes(run)[1]:
            _note(sections[0], text)
        _depth_section(page, sections[0], val, compare)
        _group_section(page, sections[1], val, groups, compare)
        _residual_section(page, sections[2], val)
        _weights_section(page, sections[3], val, compare)
    _vip_section(page, page.section("VIP scores"), run.table("vip_study"))
    _table_section(page, page.section("Tables"), run)
    _manifest_section(page.section("Manifest"), run)
    index = out / "index.html"
    atomic_write_text(index, _render(run, page))  # a report killed mid-write keeps the previous page
    return index


def _note(parts: list[str], text: str) -> None:
    """An informational note: the run differs from the thesis's setting (not something missing)."""
    parts.append(f'<p class="note">{html.escape(text)}</p>')


def _setting_notes(run: Run) -> tuple[list[str], list[str]]:
    """Where the runs' manifests use fewer settings than the thesis: the note on splits, the note on seeds
    (each a list of at most one text, naming the runs concerned when runs are compared)."""
    no_test, one_seed = [], []
    for name in run.runs:
        config = (run.manifests.get(name) or {}).get("config") or {}
        if (config.get("data") or {}).get("test") == 0:
            no_test.append(name)
        models = config.get("models") or []
        if models and all(len(model.get("seeds", [0])) == 1 for model in models):
            one_seed.append(name)

    def note(names: list[str], text: str) -> list[str]:
        if not names:
            return []
        return [f"{', '.join(names)}: {text}" if len(run.runs) > 1 else text]

    return (
        note(no_test, _NO_TEST_NOTE),
        note(one_seed, "one seed per model; the thesis averages over runs"),
    )


def _seeds(frame: pd.DataFrame) -> pd.Series:
    """How many seeds (sources) each variant has."""
    return frame.groupby("variant", sort=False)["source"].nunique()


def _over(seeds: int) -> str:
    return f", mean ± std over {seeds} seeds (shaded)" if seeds > 1 else ""


def _layer_curves(val: pd.DataFrame) -> pd.DataFrame:
    return val[val["representation"] == "layer"]


def _control(val: pd.DataFrame, series: str = "variant") -> pd.DataFrame:
    """The Control_Random whole-layer curves, one per ``series`` value (mean over the models sharing it)."""
    control = _layer_curves(val)
    control = control[control["attribute"] == CONTROL]
    control = control.groupby([series, "depth"], as_index=False)["accuracy"].mean()
    return control.rename(columns={series: "series"})


_DEPTH_KEYS = ["panel", "series", "attribute", "representation", "depth", "layer"]


def _depth_section(page: _Page, parts: list[str], val: pd.DataFrame, compare: bool) -> None:
    if compare:  # one figure per representation, one curve per run and variant
        several = bool((_seeds(val) > 1).any())
        for representation, style in REPRESENTATION_STYLE.items():
            curves = depth_curves(val[val["representation"] == representation])
            if curves.empty:
                continue
            curves = mean_over_seeds(curves, ["variant", *_DEPTH_KEYS]).assign(series=lambda f: f["variant"])
            over = ", mean ± std over seeds (shaded)" if several else ""
            title = f"Accuracy over depth, {style['label']}: runs overlaid{over}"
            page.figure(
                parts, f"depth-{representation}", draw_panels(curves, title, _control(val)), curves, title
            )
        return
    for variant, sub in val.groupby("variant", sort=False):
        curves = depth_curves(sub)
        if curves.empty:
            continue
        seeds = sub["source"].nunique()
        curves = mean_over_seeds(curves, _DEPTH_KEYS)
        title = f"{variant}: validation accuracy over depth per attribute{_over(seeds)} (thesis Figs 5.1-5.3)"
        page.figure(parts, f"depth-{variant}", draw_panels(curves, title, _control(sub)), curves, title)
        if seeds > 1:
            each: list[str] = []
            for source, one in sub.groupby("source", sort=False):
                curves = depth_curves(one)
                title = f"{source}: validation accuracy over depth per attribute, one seed"
                fig = draw_panels(curves, title, _control(one, "source"))
                page.figure(each, f"depth-{source}", fig, curves, title)
            summary = html.escape(f"{variant}: each of its {seeds} seeds")
            parts.append(f"<details><summary>{summary}</summary>{''.join(each)}</details>")


def _group_section(
    page: _Page, parts: list[str], val: pd.DataFrame, groups: Mapping[str, tuple[str, ...]], compare: bool
) -> None:
    layer = _layer_curves(val)
    present = set(layer["attribute"])
    frames = [layer[layer["attribute"].isin(members)].assign(panel=name) for name, members in groups.items()]
    absent = [name for name, members in groups.items() if not present & set(members)]
    if absent:
        _missing(parts, f"groups without any attribute in this run: {', '.join(absent)}")
    curves = pd.concat(frames, ignore_index=True)
    if curves.empty:
        return
    if compare:  # one curve per run and variant: the group's mean (per seed, then over seeds)
        curves = mean_over_seeds(curves, ["panel", "variant", "depth", "layer"])
        curves = curves.assign(series=curves["variant"])
        over = ", mean ± std over seeds (shaded)" if (curves["seeds"] > 1).any() else ""
        title = (
            f"Whole-layer accuracy, mean over each group's attributes: runs overlaid{over} "
            "(thesis Figs 5.5-5.7)"
        )
        page.figure(parts, "groups", draw_panels(curves, title, _control(val), columns=4), curves, title)
        return
    for variant, sub in curves.groupby("variant", sort=False):
        seeds = sub["source"].nunique()
        sub = mean_over_seeds(sub, ["panel", "attribute", "depth", "layer"])
        sub = sub.assign(series=sub["attribute"])
        title = f"{variant}: whole-layer accuracy by attribute group{_over(seeds)} (thesis Figs 5.5-5.7)"
        fig = draw_panels(sub, title, _control(val[val["variant"] == variant]), columns=4, panel_legends=True)
        page.figure(parts, f"groups-{variant}", fig, sub, title)


def _residual_section(page: _Page, parts: list[str], val: pd.DataFrame) -> None:
    layer = _layer_curves(val)
    variants = [
        v for v, sub in layer.groupby("variant", sort=False) if sub["kind"].isin(["block", "residual"]).any()
    ]
    if not variants:
        _missing(parts, "no layer of kind block or residual in this run: no residual-block view.")
        return
    for variant in variants:
        sub = layer[layer["variant"] == variant]
        real = sub[sub["attribute"] != CONTROL]
        mean = mean_over_seeds(real, ["depth", "layer", "kind"]).assign(panel="mean over attributes")
        each = mean_over_seeds(real, ["attribute", "depth", "layer", "kind"])
        curves = pd.concat([mean, each.assign(panel=each["attribute"])], ignore_index=True)
        curves = curves.assign(series="whole layer")
        seeds = sub["source"].nunique()
        title = f"{variant}: post-skip vs residual-internal points{_over(seeds)} (thesis Fig. 5.8)"
        fig = draw_panels(curves, title, _control(sub), mark_kinds=True)
        page.figure(parts, f"residual-{variant}", fig, curves, title)


def _weights_section(page: _Page, parts: list[str], val: pd.DataFrame, compare: bool) -> None:
    layer = _layer_curves(val)
    layer = layer[layer["weights"].fillna("") != ""]
    if layer.empty:
        _missing(parts, "the results record no weight origin (column weights): no weight-origin view.")
        return
    origin = layer["run"] + ": " + layer["weights"] if compare else layer["weights"]
    architecture = layer["architecture"].fillna("").replace("", "unknown architecture")
    layer = layer.assign(panel=architecture, series=origin)
    control = layer["attribute"] == CONTROL
    curves = mean_over_seeds(layer[~control], ["panel", "series", "depth", "layer"])
    reference = _control(layer[control], "series")
    over = ", mean ± std over the models of an origin (shaded)" if (curves["seeds"] > 1).any() else ""
    title = f"Mean whole-layer accuracy over attributes per weight origin{over} (thesis Fig. 5.4)"
    page.figure(parts, "weight-origins", draw_panels(curves, title, reference, columns=3), curves, title)


def _vip_section(page: _Page, parts: list[str], vip: pd.DataFrame | None) -> None:
    if vip is None or vip.empty:
        _missing(parts, "vip_study.parquet is missing from this run: no VIP figures.")
        return
    title = "VIP distribution and single-neuron accuracy per variant, its seeds pooled (thesis Fig. 5.9)"
    page.figure(parts, "vip", draw_vip(vip.assign(source=vip["variant"]), title), vip, title)


def _table_section(page: _Page, parts: list[str], run: Run) -> None:
    results, baseline, ablation = run.table("results"), run.table("baseline"), run.table("ablation")
    if baseline is None:
        _missing(
            parts,
            "baseline.parquet is missing: Table 5.2 has no multitask baseline or gap (give --baseline PATH, "
            "the baseline.parquet of faceprobe train attributes).",
        )
    if results is not None:
        _best_tables(page, parts, run, results, baseline)
    if ablation is None:
        _missing(parts, "ablation.parquet is missing from this run: no ablation table (5.4).")
    else:
        several = bool((_seeds(ablation) > 1).any())
        splits = "val and test rows apart" if (ablation["split"] == "test").any() else "validation split"
        caption = f"Mean accuracy drop of later probes after zeroing top-VIP neurons, {splits} (Table 5.4)"
        page.table(parts, "ablation-drops", ablation_drops(ablation, over_seeds=True), caption)
        if several:
            page.table(
                parts, "ablation-drops-per-seed", ablation_drops(ablation), f"{caption}: each seed (model)"
            )
    vip = run.table("vip_study")
    if vip is not None and not vip.empty:
        page.table(
            parts,
            "vip-correlations",
            vip_correlations(vip, by="variant"),
            "Mean over PLS projections (model, layer, attribute) of the Pearson r between single-neuron "
            "accuracy and VIP (thesis 0.93) or mean activation on positives (thesis 0.38), Control_Random "
            "excluded (thesis 5.3, Fig. 5.9); the pooled r is not the thesis statistic",
        )
        page.table(
            parts,
            "vip-projections",
            vip_projections(vip),
            "Pearson r with single-neuron accuracy, per PLS projection (Fig. 5.9)",
        )


def _best_tables(
    page: _Page, parts: list[str], run: Run, results: pd.DataFrame, baseline: pd.DataFrame | None
) -> None:
    """Tables 5.2 and 5.3, averaged over seeds, with the notes on settings and per-seed tables below."""
    best = best_units(results, baseline, over_seeds=True)
    per_seed = best_units(results, baseline)
    several = bool((_seeds(results) > 1).any())
    split = "test" if (best["split"] == "test").all() else "val where the run has no test rows"
    over = ", mean over seeds" if several else ""
    caption = f"Best layer and units per attribute, chosen on val, reported on {split}{over} (Table 5.2)"
    page.table(parts, "best-units", best, caption)
    _note(parts, _CHANNEL_NOTE)
    no_test, one_seed = _setting_notes(run)
    for text in [*no_test, *one_seed]:
        _note(parts, text)
    if several:
        page.table(parts, "best-units-per-seed", per_seed, "Table 5.2 for each seed (model)")
    caption = f"Mean best accuracy per representation{over}, Control_Random excluded (Table 5.3)"
    page.table(parts, "representation-averages", representation_averages(per_seed, over_seeds=True), caption)
    if several:
        page.table(
            parts,
            "representation-averages-per-seed",
            representation_averages(per_seed),
            "Table 5.3 for each seed (model)",
        )


def _manifest_section(parts: list[str], run: Run) -> None:
    for name in run.runs:
        manifest = run.manifests.get(name)
        if manifest is None:
            _missing(parts, f"{name}: manifest.json is missing; models, data and versions are unknown.")
            continue
        parts.append(f"<h3>{html.escape(name)}</h3>")
        models = manifest.get("models") or []
        if models:
            parts.append(table_html(pd.DataFrame(models).astype(str)))
        facts = {k: manifest[k] for k in ("faceprobe_version", "created", "git_revision") if k in manifest}
        for key in ("data", "versions"):
            facts.update({f"{key}.{k}": v for k, v in (manifest.get(key) or {}).items()})
        if facts:
            parts.append(
                table_html(pd.DataFrame({"key": list(facts), "value": [str(v) for v in facts.values()]}))
            )
        if manifest.get("config"):
            parts.append(f"<pre>{html.escape(json.dumps(manifest['config'], indent=2, default=str))}</pre>")


def _render(run: Run, page: _Page) -> str:
    missing = ""
    if run.missing:
        missing = f'<p class="missing">Not in this run: {html.escape(", ".join(run.missing))}.</p>'
    nav = "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, _ in page.sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(h)}</h2>{"".join(p)}</section>' for sid, h, p in page.sections
    )
    title = html.escape(f"faceprobe report: {run.name}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>{missing}<nav>{nav}</nav>{body}</body></html>\n"
    )
