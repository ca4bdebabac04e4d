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
from faceprobe.report.figures import REPRESENTATION_STYLE, depth_curves, draw_panels, draw_vip, save_figure
from faceprobe.report.groups import DEFAULT_GROUPS
from faceprobe.report.run import Run, combine_runs
from faceprobe.report.tables import (
    CONTROL,
    ablation_drops,
    best_units,
    representation_averages,
    table_html,
    vip_correlations,
    write_table,
)

__all__ = ["build_report"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1500px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.5rem}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
.missing{background:#fff4e0;padding:.4rem .8rem;border-left:4px solid #E69F00}
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
    """Write the report of one run, or the overlay of several, into ``out``; returns ``out/index.html``."""
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


def _layer_curves(val: pd.DataFrame) -> pd.DataFrame:
    return val[val["representation"] == "layer"]


def _control(val: pd.DataFrame, series: str = "source") -> pd.DataFrame:
    """The Control_Random whole-layer curves, one per ``series`` value (mean over the models sharing it)."""
    control = _layer_curves(val)
    control = control[control["attribute"] == CONTROL]
    control = control.groupby([series, "depth"], as_index=False)["accuracy"].mean()
    return control.rename(columns={series: "series"})


def _depth_section(page: _Page, parts: list[str], val: pd.DataFrame, compare: bool) -> None:
    if compare:  # one figure per representation, one curve per run and model
        for representation, style in REPRESENTATION_STYLE.items():
            curves = depth_curves(val[val["representation"] == representation]).assign(
                series=lambda f: f["source"]
            )
            if curves.empty:
                continue
            title = f"Accuracy over depth, {style['label']}: runs overlaid"
            page.figure(
                parts, f"depth-{representation}", draw_panels(curves, title, _control(val)), curves, title
            )
        return
    for source, sub in val.groupby("source", sort=False):
        curves = depth_curves(sub)
        if curves.empty:
            continue
        title = f"{source}: validation accuracy over depth per attribute (thesis Figs 5.1-5.3)"
        page.figure(parts, f"depth-{source}", draw_panels(curves, title, _control(sub)), curves, title)


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
    if compare:  # one curve per run and model: the group's mean
        keys = ["panel", "source", "depth", "layer"]
        curves = (
            curves.groupby(keys, sort=False, as_index=False)["accuracy"]
            .mean()
            .assign(series=lambda f: f["source"])
        )
        title = "Whole-layer accuracy, mean over each group's attributes: runs overlaid (thesis Figs 5.5-5.7)"
        page.figure(parts, "groups", draw_panels(curves, title, _control(val), columns=4), curves, title)
        return
    for source, sub in curves.groupby("source", sort=False):
        sub = sub.assign(series=sub["attribute"])
        title = f"{source}: whole-layer accuracy by attribute group (thesis Figs 5.5-5.7)"
        fig = draw_panels(sub, title, _control(val[val["source"] == source]), columns=4, panel_legends=True)
        page.figure(parts, f"groups-{source}", fig, sub, title)


def _residual_section(page: _Page, parts: list[str], val: pd.DataFrame) -> None:
    layer = _layer_curves(val)
    sources = [
        s for s, sub in layer.groupby("source", sort=False) if sub["kind"].isin(["block", "residual"]).any()
    ]
    if not sources:
        _missing(parts, "no layer of kind block or residual in this run: no residual-block view.")
        return
    for source in sources:
        sub = layer[layer["source"] == source]
        real = sub[sub["attribute"] != CONTROL]
        mean = (
            real.groupby(["depth", "layer", "kind"], as_index=False)["accuracy"]
            .mean()
            .assign(panel="mean over attributes")
        )
        curves = pd.concat([mean, real.assign(panel=real["attribute"])], ignore_index=True).assign(
            series="whole layer"
        )
        title = f"{source}: post-skip vs residual-internal points (thesis Fig. 5.8)"
        fig = draw_panels(curves, title, _control(sub), mark_kinds=True)
        page.figure(parts, f"residual-{source}", fig, curves, title)


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
    curves = layer[~control].groupby(["panel", "series", "depth", "layer"], as_index=False)["accuracy"].mean()
    reference = _control(layer[control], "series")
    title = "Mean whole-layer accuracy over attributes per weight origin (thesis Fig. 5.4)"
    page.figure(parts, "weight-origins", draw_panels(curves, title, reference, columns=3), curves, title)


def _vip_section(page: _Page, parts: list[str], vip: pd.DataFrame | None) -> None:
    if vip is None or vip.empty:
        _missing(parts, "vip_study.parquet is missing from this run: no VIP figures.")
        return
    title = "VIP distribution and single-neuron accuracy (thesis Fig. 5.9)"
    page.figure(parts, "vip", draw_vip(vip, title), vip, title)


def _table_section(page: _Page, parts: list[str], run: Run) -> None:
    results, baseline, ablation = run.table("results"), run.table("baseline"), run.table("ablation")
    if baseline is None:
        _missing(parts, "baseline.parquet is missing: Table 5.2 has no multitask baseline or gap.")
    if results is not None:
        best = best_units(results, baseline)
        split = "test" if (best["split"] == "test").all() else "val where the run has no test rows"
        page.table(
            parts,
            "best-units",
            best,
            f"Best layer and units per attribute, chosen on val, reported on {split} (Table 5.2)",
        )
        page.table(
            parts,
            "representation-averages",
            representation_averages(best),
            "Mean best accuracy per representation, Control_Random excluded (Table 5.3)",
        )
    if ablation is None:
        _missing(parts, "ablation.parquet is missing from this run: no ablation table (5.4).")
    else:
        page.table(
            parts,
            "ablation-drops",
            ablation_drops(ablation),
            "Mean accuracy drop of later probes after zeroing top-VIP neurons (Table 5.4)",
        )
    vip = run.table("vip_study")
    if vip is not None and not vip.empty:
        page.table(
            parts,
            "vip-correlations",
            vip_correlations(vip),
            "Pearson r with single-neuron accuracy (Fig. 5.9)",
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
