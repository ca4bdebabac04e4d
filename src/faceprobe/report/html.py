"""The report: one self-contained HTML page (figures inline, no network) plus files to reuse.

``build_report`` writes ``index.html`` with every figure embedded as a PNG data URI, and beside it
``figures/`` (PNG, SVG and the CSV of plotted numbers) and ``tables/`` (CSV and Markdown). Given several
runs it overlays them (``faceprobe compare``). The page opens with a summary: every warning of the run in
one box, an attribute x layer heat map, the best layer per attribute with its 95% interval, and how high the
random-label control reaches. Every name from the data is escaped, and a Content Security Policy forbids
remote loads and every script but the page's own (by its hash: the few lines that sort and filter tables),
so an attribute called ``<script>`` stays text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import re
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.atomic import atomic_write_text
from faceprobe.controls import control_rows, is_control
from faceprobe.report.figures import (
    REPRESENTATION_STYLE,
    depth_curves,
    draw_heatmap,
    draw_panels,
    draw_vip,
    layer_positions,
    mean_over_seeds,
    representation_labels,
)
from faceprobe.report.groups import DEFAULT_GROUPS
from faceprobe.report.run import Run, combine_runs
from faceprobe.report.saving import FigureSaver
from faceprobe.report.stats import MIN_EVAL, too_few, wilson_interval
from faceprobe.report.tables import (
    HIGH,
    LOW,
    ablation_drops,
    best_units,
    representation_averages,
    row_classes,
    selectivity as selectivity_table,
    table_html,
    vip_correlations,
    vip_projections,
    write_table,
)
from faceprobe.report.training import training_section
from faceprobe.run.summary import run_warnings

__all__ = ["build_report", "coinciding_runs"]

#: Table 5.2's note when a run scored no test split.
_NO_TEST_NOTE = (
    "units chosen and reported on the validation split (the run scored no test split; thesis: chosen on val, "
    "reported on test)"
)
#: What Table 5.2's best channel means (the runner writes channel rows for layers with spatial extent only).
_CHANNEL_NOTE = "best channel: convolutional layers only (1-D outputs have no channels; thesis 5.2)"

#: Sorting (click a column's head) and filtering (type in the box above) of every table. The page's
#: Content Security Policy allows this script by its hash and no other.
_SCRIPT = """
function key(cell) {
  var v = cell.getAttribute("data-v");
  return v === null ? cell.textContent.toLowerCase() : parseFloat(v);
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[0];
  var box = document.createElement("input");
  box.type = "search";
  box.className = "filter";
  box.placeholder = "filter rows";
  box.setAttribute("aria-label", "filter the rows of the table below");
  table.parentNode.insertBefore(box, table);
  box.addEventListener("input", function () {
    var text = box.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function (row) {
      row.hidden = text !== "" && row.textContent.toLowerCase().indexOf(text) < 0;
    });
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (head, column) {
    head.tabIndex = 0;
    head.title = "sort by this column";
    function sort() {
      var up = head.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(head.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
      head.setAttribute("aria-sort", up ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[column]), y = key(b.cells[column]);
        var order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1;
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    head.addEventListener("click", sort);
    head.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
  });
});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'"
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1500px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.5rem}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
.missing{background:#fff4e0;padding:.4rem .8rem;border-left:4px solid #E69F00}
.note{background:#eef5fb;padding:.4rem .8rem;border-left:4px solid #0072B2}
.warnings{background:#fff4e0;padding:.4rem .8rem .4rem 1.6rem;border:1px solid #E69F00}
.warnings h3{margin:.3rem 0 .3rem -.8rem;font-size:1rem}.warnings li{margin:.15rem 0}
.ok{background:#eef8f0;padding:.4rem .8rem;border-left:4px solid #009E73}
details{margin:.5rem 0 1rem}summary{cursor:pointer;font-size:.9rem}
table{border-collapse:collapse;font-size:.8rem;margin:.2rem 0 1rem;max-width:100%}
td,th{border:1px solid #ddd;padding:2px 6px;overflow-wrap:anywhere;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0;cursor:pointer}tbody tr:nth-child(even){background:#fafafa}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.few td{color:#999}tr.optimistic td:first-child::before{content:"\\2020 "}
input.filter{margin:.3rem 0;font-size:.8rem;padding:2px 4px}
.legend{font-size:.8rem;color:#555}
nav a{margin-right:1rem}
"""
#: What greyed and marked rows mean, below the tables that have some.
_ROW_LEGEND = {
    "few": f"grey rows: fewer than {MIN_EVAL} images scored; their 95% interval is about ±10 points or wider",
    "optimistic": "† optimistic: chosen and reported on the same validation images (no test split), which "
    "flatters the winner",
}


@dataclass(frozen=True)
class _FigureHTML:
    """A figure of the page, as HTML once its files are written (embedded PNG, links to PNG, SVG, CSV)."""

    paths: Future[dict[str, Path]]
    caption: str

    def __str__(self) -> str:
        paths = self.paths.result()
        uri = "data:image/png;base64," + base64.b64encode(paths["png"].read_bytes()).decode()
        links = " · ".join(f'<a href="figures/{p.name}">{s.upper()}</a>' for s, p in paths.items())
        return (
            f'<figure><img src="{uri}" alt="{html.escape(self.caption)}">'
            f"<figcaption>{html.escape(self.caption)} ({links})</figcaption></figure>"
        )


Parts = list[str | _FigureHTML]
"""A section's content in order: HTML, and figures whose files workers may still be writing."""


@dataclass
class _Page:
    """The page under construction: sections in order, and where their files go."""

    out: Path
    top_k: int | None = 8  # the runs' probe.top_k (None: they differ), for the legends
    sections: list[tuple[str, str, Parts]] = field(default_factory=list)
    saver: FigureSaver = field(default_factory=FigureSaver)
    _names: set[str] = field(default_factory=set)

    def labels(self, metric: str = "accuracy") -> dict[str, str]:
        """The representations' legend labels for targets scored by ``metric``."""
        return representation_labels(metric, self.top_k)

    def section(self, heading: str) -> Parts:
        parts: Parts = []
        self.sections.append((_slug(heading), heading, parts))
        return parts

    def stem(self, folder: str, name: str) -> Path:
        slug, n = _slug(name), 1
        while f"{folder}/{slug}" in self._names:
            n += 1
            slug = f"{_slug(name)}-{n}"
        self._names.add(f"{folder}/{slug}")
        return self.out / folder / slug

    def figure(self, parts: Parts, name: str, fig, data: pd.DataFrame, caption: str) -> None:
        parts.append(_FigureHTML(self.saver.save(fig, self.stem("figures", name), data), caption))

    def table(self, parts: Parts, name: str, frame: pd.DataFrame, caption: str) -> None:
        csv, md = write_table(frame, self.stem("tables", name))
        classes = row_classes(frame)
        legend = [text for key, text in _ROW_LEGEND.items() if any(key in c.split() for c in classes)]
        legend_html = "".join(f'<p class="legend">{html.escape(text)}</p>' for text in legend)
        parts.append(
            f"<h3>{html.escape(caption)}</h3><p><a href='tables/{csv.name}'>CSV</a> · "
            f"<a href='tables/{md.name}'>Markdown</a></p>{table_html(frame, classes)}{legend_html}"
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower() or "x"


def _missing(parts: Parts, text: str) -> None:
    parts.append(f'<p class="missing">{html.escape(text)}</p>')


def build_report(
    runs: list[Run],
    out: str | Path,
    groups: Mapping[str, tuple[str, ...]] = DEFAULT_GROUPS,
    *,
    selectivity: bool = False,
    workers: int | None = None,
) -> Path:
    """Write the report of one run, or the overlay of several, into ``out``; returns ``out/index.html``.

    ``selectivity`` draws the accuracy-over-depth figures as selectivity: each accuracy less the
    random-label controls' mean at the same model, layer and representation. ``workers``: processes that
    draw the figures (default: one per CPU, at most 8; 1 draws them in this process).

    Views are averaged over the seeds of each variant (the thesis reports means over runs), with the spread
    over seeds as error bars or ``std`` columns and the 95% interval of each accuracy (Wilson, from the
    images scored) shaded or as ``±``; where a variant has several seeds its per-seed views follow.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = runs[0] if len(runs) == 1 else combine_runs(runs)
    run, beyond = _binary_only(run)
    compare = len(runs) > 1
    page = _Page(out, _top_k(run), saver=FigureSaver(workers))
    results = run.table("results")
    summary = page.section("Summary")
    sections = page.section("Accuracy over depth"), page.section("Attribute groups")
    sections += page.section("Residual blocks"), page.section("Weight origins")
    groups, other = _with_other(groups, results)
    val = None if results is None else results[results["split"] == "val"].dropna(subset=["accuracy"])
    coincide = _coinciding(val) if compare and val is not None else []
    _warnings_box(summary, run, groups.get(other, ()), coincide)
    if results is None or val is None:
        for parts in sections:
            _missing(parts, "results.parquet is missing from this run: no depth views.")
    else:
        _summary(page, summary, run, results, val)
        for text in _setting_notes(run)[1]:
            _note(sections[0], text)
        for text in coincide:
            _note(sections[0], text)
        _depth_section(page, sections[0], val, compare, _DepthView(selectivity))
        _group_section(page, sections[1], val, groups, compare)
        _residual_section(page, sections[2], val)
        _weights_section(page, sections[3], val, compare)
        training_section(page, val)  # only for runs that probed several epochs of a network
    if beyond is not None and not beyond.empty:
        _kinds_section(page, page.section("Targets beyond binary"), beyond)
    _vip_section(page, page.section("VIP scores"), run.table("vip_study"))
    _table_section(page, page.section("Tables"), run)
    _manifest_section(page.section("Manifest"), run)
    index = out / "index.html"
    atomic_write_text(index, _render(run, page))  # a report killed mid-write keeps the previous page
    return index


def _top_k(run: Run) -> int | None:
    """The top-k of the runs' pooled VIP probes (``probe.top_k``, 8 unless set), None where they differ."""
    values = {
        (((run.manifests.get(name) or {}).get("config") or {}).get("probe") or {}).get("top_k", 8)
        for name in run.runs
    }
    return values.pop() if len(values) == 1 else None


def _binary_only(run: Run) -> tuple[Run, pd.DataFrame | None]:
    """The run with its binary attributes' rows only (accuracy: every view of the thesis reads those),
    and the rows of its multi-class and continuous targets (:mod:`faceprobe.targets`), which get views of
    their own, each metric on its own axis."""
    results = run.table("results")
    if results is None or "metric" not in results:
        return run, None
    tables = dict(run.tables)
    tables["results"] = results[results["metric"] == "accuracy"]
    vip = run.table("vip_study")
    if vip is not None and "metric" in vip:
        tables["vip_study"] = vip[vip["metric"].fillna("accuracy") == "accuracy"]
    return replace(run, tables=tables), results[results["metric"] != "accuracy"]


#: Each headline metric beyond binary accuracy: its axis label and where chance (or the mean predictor) lies.
_KIND_AXES = {
    "balanced_accuracy": (
        "val. balanced accuracy (%)",
        "multi-class targets, read by PLS-DA + QDA",
        "chance, 1 / classes",
    ),
    "r2": (
        "val. R^2 (%)",
        "continuous targets, read by least squares on the PLS scores or units (no QDA)",
        "the mean predictor's R^2 = 0",
    ),
}


def _kinds_section(page: _Page, parts: Parts, rows: pd.DataFrame) -> None:
    """Multi-class and continuous targets (beyond the thesis): per metric one figure, its own axis, a panel
    per target and a curve per representation, chance (1 / classes) or the mean predictor's R^2 (0)
    dashed; the best layer of each continuous target with its R^2 and its MAE in the target's unit."""
    val = rows[rows["split"] == "val"].dropna(subset=["accuracy"])
    for metric, (ylabel, what, baseline) in _KIND_AXES.items():
        mine = val[val["metric"] == metric]
        for variant, sub in mine.groupby("variant", sort=False):
            curves = mean_over_seeds(depth_curves(sub.drop(columns="n_eval")), _DEPTH_KEYS)
            chance = sub.groupby("attribute")["chance"].mean().fillna(0.0).to_dict()
            measure = ylabel.removeprefix("val. ").removesuffix(" (%)")
            title = (
                f"{variant}: validation {measure} over depth, {what} (dashed: {baseline}; beyond the thesis)"
            )
            fig = draw_panels(curves, title, ylabel=ylabel, chance=chance, labels=page.labels(metric))
            page.figure(parts, f"{metric}-{variant}", fig, curves.rename(columns={"accuracy": metric}), title)
    layer = val[val["representation"] == "layer"]
    r2 = layer[layer["metric"] == "r2"]
    if r2.empty:
        return
    best = r2.loc[r2.groupby(["variant", "attribute"])["accuracy"].idxmax()]
    mae_rows = layer[layer["metric"] == "mae"].set_index(["source", "layer", "attribute"])
    mae, mae_chance = mae_rows["accuracy"], mae_rows["chance"]
    keys = list(zip(best["source"], best["layer"], best["attribute"], strict=True))
    table = best[["variant", "attribute", "layer", "depth", "accuracy", "n_eval"]]
    table = table.rename(columns={"accuracy": "r2"})
    table.insert(5, "mae", [mae.get(key, np.nan) for key in keys])
    table.insert(6, "mae_mean_predictor", [mae_chance.get(key, np.nan) for key in keys])
    caption = (
        "Continuous targets: the best whole layer by validation R^2 (0 is the mean predictor's), with its "
        "mean absolute error in the target's unit and the mean predictor's (beyond the thesis)"
    )
    page.table(parts, "continuous-best", table.reset_index(drop=True), caption)


#: The group of the attributes that no group names: every attribute is in some figure.
OTHER = "Other"


def _with_other(
    groups: Mapping[str, tuple[str, ...]], results: pd.DataFrame | None
) -> tuple[dict[str, tuple[str, ...]], str | None]:
    """``groups`` plus :data:`OTHER`, holding the run's attributes outside every group (not the control),
    and the name that group got (None when every attribute has a group)."""
    groups = dict(groups)
    if results is None:
        return groups, None
    named = {a for members in groups.values() for a in members}
    rest = sorted(a for a in set(results["attribute"].astype(str)) - named if not is_control(a))
    if not rest:
        return groups, None
    other = OTHER if OTHER not in groups else f"{OTHER} (not in any group)"
    groups[other] = tuple(rest)
    return groups, other


def _warnings_box(parts: Parts, run: Run, ungrouped: tuple[str, ...], coincide: list[str]) -> None:
    """Every warning of the run(s) in one box (those the end of a run prints, from the same code), plus the
    report's own: accuracies on too few images, attributes no group names, curves that coincide."""
    results = run.table("results")
    items: list[str] = []
    for name in run.runs:
        mine = results if results is None or "run" not in results else results[results["run"] == name]
        tables = [t for t, frame in run.tables.items() if "run" not in frame or (frame["run"] == name).any()]
        prefix = f"{name}: " if len(run.runs) > 1 else ""
        items += [prefix + text for text in run_warnings(mine, run.manifests.get(name), tables)]
    if results is not None and "n_eval" in results:
        few = results[too_few(results["n_eval"].astype(float)) & results["accuracy"].notna()]
        if len(few):
            least = int(few["n_eval"].min())
            items.append(
                f"{few['attribute'].nunique()} attribute(s) scored on fewer than {MIN_EVAL} images (as few "
                f"as {least}): their 95% intervals are about ±10 points or wider; rows greyed"
            )
    if ungrouped:
        items.append(f"attributes in no group, shown as {OTHER}: {', '.join(ungrouped)}")
    items += coincide
    if not items:
        parts.append('<p class="ok">No warnings: full draws, every probe scored, every study run.</p>')
        return
    listed = "".join(f"<li>{html.escape(text)}</li>" for text in items)
    parts.append(f'<div class="warnings" role="note"><h3>Warnings ({len(items)})</h3><ul>{listed}</ul></div>')


def coinciding_runs(runs: list[Run]) -> list[str]:
    """One sentence per pair of the compared runs' variants whose validation curves coincide (see the
    compare page's warnings); empty for a single run or one without results."""
    if len(runs) < 2:
        return []
    results = combine_runs(runs).table("results")
    if results is None:
        return []
    return _coinciding(results[results["split"] == "val"].dropna(subset=["accuracy"]))


def _coinciding(val: pd.DataFrame) -> list[str]:
    """Compared runs whose validation curves are the same numbers at every shared point: drawn on top of
    each other, one hides the other, so the page says so (two copies of one run, a seed that changed
    nothing)."""
    keys = [k for k in ("attribute", "layer", "depth", "representation", "unit") if k in val]
    curves = val.set_index([*keys, "variant"])["accuracy"].groupby(level=list(range(len(keys) + 1))).mean()
    wide = curves.unstack("variant")
    found = []
    for a, b in itertools.combinations(wide.columns, 2):
        shared = wide[[a, b]].dropna()
        if len(shared) and np.allclose(shared[a], shared[b], rtol=0, atol=1e-12):
            found.append(
                f"{a} and {b} give the same accuracy at all {len(shared)} points they share: their curves "
                "coincide, one hidden under the other"
            )
    return found


def _summary(page: _Page, parts: Parts, run: Run, results: pd.DataFrame, val: pd.DataFrame) -> None:
    """What a reader came for: the control's ceiling, the heat map, the best layer per attribute."""
    layer = _layer_curves(val)
    for variant, sub in layer.groupby("variant", sort=False):
        control = sub[control_rows(sub["attribute"])]
        if control.empty:
            continue
        mean = control.groupby(["depth", "layer"], as_index=False).agg(
            accuracy=("accuracy", "mean"), n_eval=("n_eval", "sum")
        )
        top = mean.loc[mean["accuracy"].idxmax()]
        low, high = wilson_interval(top["accuracy"], top["n_eval"])
        count = control["attribute"].nunique()
        who = (
            "the control (Control_Random, random labels) reaches"
            if count == 1
            else f"the {count} random-label controls (Control_Random ...) reach on average"
        )
        _note(
            parts,
            f"{variant}: {who} at most "
            f"{100 * top['accuracy']:.1f}% (95% CI {100 * low:.1f}-{100 * high:.1f}, layer {top['layer']}, "
            f"{int(top['n_eval'])} images): whole-layer accuracies up to that are what a probe finds in "
            "noise.",
        )
    for variant, sub in layer.groupby("variant", sort=False):
        real = sub[~control_rows(sub["attribute"])]
        if real.empty:
            continue
        means = real.groupby(["attribute", "depth", "layer"], as_index=False)["accuracy"].mean()
        at = layer_positions(means)
        matrix = means.pivot_table(index="attribute", columns="depth", values="accuracy", aggfunc="mean")
        names = means.drop_duplicates("depth").set_index("depth")["layer"]
        matrix = matrix.reindex(columns=sorted(at))
        matrix.columns = [f"{d} {names[d]}" for d in matrix.columns]
        matrix = matrix.loc[matrix.max(axis=1).sort_values(ascending=False).index]  # best-encoded first
        few = bool(too_few(real["n_eval"].astype(float)).any())
        title = f"{variant}: whole-layer validation accuracy per attribute and layer (%)"
        page.figure(
            parts, f"heatmap-{variant}", draw_heatmap(matrix, title, few), matrix.reset_index(), title
        )
    best = best_units(results, run.table("baseline"), over_seeds=True)
    keep = ["source", "seeds", "attribute", "best layer", "layer accuracy", "layer accuracy std"]
    keep += [
        "layer accuracy" + LOW,
        "layer accuracy" + HIGH,
        "split",
        "n_eval",
        "optimistic",
        "baseline",
        "gap",
    ]
    best = best[[c for c in keep if c in best]]
    best = best.rename(columns={"source": "model"}).sort_values(
        ["model", "layer accuracy"], ascending=[True, False]
    )
    page.table(
        parts,
        "summary-best-layer",
        best.reset_index(drop=True),
        "Best layer per attribute: chosen on validation, reported on test where the run scored it, with its "
        "95% interval (± half its width)",
    )


def _note(parts: Parts, text: str) -> None:
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
    return f", mean ± std over {seeds} seeds (bars)" if seeds > 1 else ""


def _layer_curves(val: pd.DataFrame) -> pd.DataFrame:
    return val[val["representation"] == "layer"]


def _control(val: pd.DataFrame, series: str = "variant") -> pd.DataFrame:
    """The Control_Random whole-layer curves, one per ``series`` value (mean over the models sharing it)."""
    control = _layer_curves(val)
    control = control[control_rows(control["attribute"])]
    control = control.groupby([series, "depth"], as_index=False)["accuracy"].mean()
    return control.rename(columns={series: "series"})


_DEPTH_KEYS = ["panel", "series", "attribute", "representation", "depth", "layer"]


def _control_spread(val: pd.DataFrame) -> pd.DataFrame | None:
    """The selectivity view's reference: per depth, the highest and the lowest control's whole-layer
    accuracy less the controls' mean (mean over the models), where there are several controls; else None,
    the line at 0 being the one control."""
    control = _layer_curves(val)
    control = control[control_rows(control["attribute"])]
    if control["attribute"].nunique() < 2:
        return None
    accuracy = control.groupby(["source", "depth"])["accuracy"]
    spread = pd.DataFrame(
        {
            "highest control less the controls' mean": accuracy.max() - accuracy.mean(),
            "lowest control less the controls' mean": accuracy.min() - accuracy.mean(),
        }
    )
    spread = spread.groupby(level="depth").mean().reset_index()
    return spread.melt(id_vars="depth", var_name="series", value_name="accuracy")


@dataclass(frozen=True)
class _DepthView:
    """What the depth figures draw: accuracy, with the controls' mean as the reference curve, or
    (``faceprobe report --selectivity``) selectivity, each accuracy less the controls' mean at its model,
    layer and representation, around a line at 0, with the controls' spread as the reference."""

    selectivity: bool = False

    @property
    def prefix(self) -> str:
        return "selectivity" if self.selectivity else "depth"

    @property
    def measure(self) -> str:
        return (
            "selectivity (accuracy less the random-label controls' mean)" if self.selectivity else "accuracy"
        )

    def curves(self, val: pd.DataFrame) -> pd.DataFrame:
        if not self.selectivity:
            return depth_curves(val)
        table = selectivity_table(val, tuple(REPRESENTATION_STYLE))
        return depth_curves(table.assign(accuracy=table["selectivity"]).drop(columns="n_eval"))

    def reference(self, val: pd.DataFrame, series: str = "variant") -> pd.DataFrame | None:
        return _control_spread(val) if self.selectivity else _control(val, series)

    def figure(
        self,
        page: _Page,
        parts: Parts,
        name: str,
        curves: pd.DataFrame,
        title: str,
        reference: pd.DataFrame | None,
    ) -> None:
        ylabel = "val. selectivity (points)" if self.selectivity else "val. accuracy (%)"
        fig = draw_panels(
            curves, title, reference, ylabel=ylabel, selectivity=self.selectivity, labels=page.labels()
        )
        data = curves.rename(columns={"accuracy": "selectivity"}) if self.selectivity else curves
        page.figure(parts, f"{self.prefix}-{name}", fig, data, title)


def _depth_section(page: _Page, parts: Parts, val: pd.DataFrame, compare: bool, view: _DepthView) -> None:
    if compare:  # one figure per representation, one curve per run and variant
        several = bool((_seeds(val) > 1).any())
        for representation, label in page.labels().items():
            curves = view.curves(val[val["representation"] == representation])
            if curves.empty:
                continue
            curves = mean_over_seeds(curves, ["variant", *_DEPTH_KEYS]).assign(series=lambda f: f["variant"])
            over = ", mean ± std over seeds (bars)" if several else ""
            title = f"{view.measure.capitalize()} over depth, {label}: runs overlaid{over}"
            reference = None if view.selectivity else _control(val)  # runs' controls differ in number
            view.figure(page, parts, representation, curves, title, reference)
        return
    for variant, sub in val.groupby("variant", sort=False):
        curves = view.curves(sub)
        if curves.empty:
            continue
        seeds = sub["source"].nunique()
        curves = mean_over_seeds(curves, _DEPTH_KEYS)
        title = (
            f"{variant}: validation {view.measure} over depth per attribute{_over(seeds)} "
            "(thesis Figs 5.1-5.3)"
        )
        view.figure(page, parts, variant, curves, title, view.reference(sub))
        if seeds > 1:
            each: Parts = []
            for source, one in sub.groupby("source", sort=False):
                title = f"{source}: validation {view.measure} over depth per attribute, one seed"
                view.figure(page, each, source, view.curves(one), title, view.reference(one, "source"))
            summary = html.escape(f"{variant}: each of its {seeds} seeds")
            parts += [f"<details><summary>{summary}</summary>", *each, "</details>"]


def _group_section(
    page: _Page, parts: Parts, val: pd.DataFrame, groups: Mapping[str, tuple[str, ...]], compare: bool
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
        over = ", mean ± std over seeds (bars)" if (curves["seeds"] > 1).any() else ""
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


def _residual_section(page: _Page, parts: Parts, val: pd.DataFrame) -> None:
    layer = _layer_curves(val)
    variants = [
        v for v, sub in layer.groupby("variant", sort=False) if sub["kind"].isin(["block", "residual"]).any()
    ]
    if not variants:
        _missing(parts, "no layer of kind block or residual in this run: no residual-block view.")
        return
    for variant in variants:
        sub = layer[layer["variant"] == variant]
        real = sub[~control_rows(sub["attribute"])]
        mean = mean_over_seeds(real, ["depth", "layer", "kind"]).assign(panel="mean over attributes")
        each = mean_over_seeds(real, ["attribute", "depth", "layer", "kind"])
        curves = pd.concat([mean, each.assign(panel=each["attribute"])], ignore_index=True)
        curves = curves.assign(series="whole layer")
        seeds = sub["source"].nunique()
        title = f"{variant}: post-skip vs residual-internal points{_over(seeds)} (thesis Fig. 5.8)"
        fig = draw_panels(curves, title, _control(sub), mark_kinds=True)
        page.figure(parts, f"residual-{variant}", fig, curves, title)


def _weights_section(page: _Page, parts: Parts, val: pd.DataFrame, compare: bool) -> None:
    layer = _layer_curves(val)
    layer = layer[layer["weights"].fillna("") != ""]
    if layer.empty:
        _missing(parts, "the results record no weight origin (column weights): no weight-origin view.")
        return
    origin = layer["run"] + ": " + layer["weights"] if compare else layer["weights"]
    architecture = layer["architecture"].fillna("").replace("", "unknown architecture")
    layer = layer.assign(panel=architecture, series=origin)
    control = control_rows(layer["attribute"])
    curves = mean_over_seeds(layer[~control], ["panel", "series", "depth", "layer"])
    reference = _control(layer[control], "series")
    over = ", mean ± std over the models of an origin (bars)" if (curves["seeds"] > 1).any() else ""
    title = f"Mean whole-layer accuracy over attributes per weight origin{over} (thesis Fig. 5.4)"
    page.figure(parts, "weight-origins", draw_panels(curves, title, reference, columns=3), curves, title)


def _vip_section(page: _Page, parts: Parts, vip: pd.DataFrame | None) -> None:
    if vip is None or vip.empty:
        _missing(parts, "vip_study.parquet is missing from this run: no VIP figures.")
        return
    title = "VIP distribution and single-neuron accuracy per variant, its seeds pooled (thesis Fig. 5.9)"
    page.figure(parts, "vip", draw_vip(vip.assign(source=vip["variant"]), title), vip, title)


def _table_section(page: _Page, parts: Parts, run: Run) -> None:
    results, baseline, ablation = run.table("results"), run.table("baseline"), run.table("ablation")
    if baseline is None:
        _missing(
            parts,
            "baseline.parquet is missing: Table 5.2 has no multitask baseline or gap (give --baseline PATH, "
            "the baseline.parquet of faceprobe train attributes).",
        )
    if results is not None:
        _best_tables(page, parts, run, results, baseline)
        _selectivity_table(page, parts, results)
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
            "accuracy and VIP (thesis 0.93) or mean activation on positives (thesis 0.38), with its 95% "
            "interval (Fisher z, from the spread of the projections) and n (projections, neurons), "
            "Control_Random excluded (thesis 5.3, Fig. 5.9); the pooled r is not the thesis statistic",
        )
        page.table(
            parts,
            "vip-projections",
            vip_projections(vip),
            "Pearson r with single-neuron accuracy, per PLS projection in depth order, with its 95% interval "
            "(Fisher z over the projection's neurons) (Fig. 5.9)",
        )


def _best_tables(
    page: _Page, parts: Parts, run: Run, results: pd.DataFrame, baseline: pd.DataFrame | None
) -> None:
    """Tables 5.2 and 5.3, averaged over seeds, with the notes on settings and per-seed tables below."""
    best = best_units(results, baseline, over_seeds=True)
    per_seed = best_units(results, baseline)
    several = bool((_seeds(results) > 1).any())
    split = "test" if (best["split"] == "test").all() else "val where the run has no test rows"
    over = ", mean over seeds" if several else ""
    caption = (
        f"Best layer and units per attribute, chosen on val, reported on {split}{over}, each accuracy ± half "
        "its 95% Wilson interval (Table 5.2)"
    )
    page.table(parts, "best-units", best, caption)
    _note(parts, _CHANNEL_NOTE)
    no_test, one_seed = _setting_notes(run)
    for text in [*no_test, *one_seed]:
        _note(parts, text)
    if several:
        page.table(parts, "best-units-per-seed", per_seed, "Table 5.2 for each seed (model)")
    caption = (
        f"Mean best accuracy per representation{over}, ± half its 95% interval (all its attributes' images), "
        "Control_Random excluded (Table 5.3)"
    )
    page.table(parts, "representation-averages", representation_averages(per_seed, over_seeds=True), caption)
    if several:
        page.table(
            parts,
            "representation-averages-per-seed",
            representation_averages(per_seed),
            "Table 5.3 for each seed (model)",
        )


def _selectivity_table(page: _Page, parts: Parts, results: pd.DataFrame) -> None:
    """Per model, layer and attribute: whole-layer validation accuracy against the random-label controls'."""
    if not control_rows(results["attribute"]).any():
        _missing(parts, "no random-label control (Control_Random) in this run: no selectivity table.")
        return
    table = selectivity_table(results)
    several = "control accuracy min" in table
    spread = ", their lowest and highest" if several else ""
    caption = (
        "Selectivity per model, layer and attribute: whole-layer validation accuracy less the mean of the "
        f"random-label controls' at that layer{spread}, ± half its 95% interval (Newcombe)"
    )
    page.table(parts, "selectivity", table.drop(columns=["representation", "split"]), caption)
    if not table["same draw sizes"].all():
        shortened = sorted(set(table.loc[~table["same draw sizes"], "attribute"]))
        _note(
            parts,
            f"{', '.join(shortened)}: draws of other sizes than the controls' (shortened: too few of a "
            "class), so their selectivity compares probes fitted and scored on different numbers of images",
        )


def _manifest_section(parts: Parts, run: Run) -> None:
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
            config = dict(_flatten(manifest["config"]))
            parts.append("<h4>configuration</h4>")
            parts.append(table_html(pd.DataFrame({"key": list(config), "value": list(config.values())})))


def _flatten(value: object, key: str = "") -> list[tuple[str, str]]:
    """A nested configuration as (dotted key, value) rows: ``data.spec``, ``models[0].architecture``;
    lists of plain values stay one row."""
    if isinstance(value, dict) and value:
        return [row for k, v in value.items() for row in _flatten(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return [row for i, v in enumerate(value) for row in _flatten(v, f"{key}[{i}]")]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return [(key, text)]


def _render(run: Run, page: _Page) -> str:
    missing = ""
    if run.missing:
        missing = f'<p class="missing">Not in this run: {html.escape(", ".join(run.missing))}.</p>'
    nav = "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, _ in page.sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(h)}</h2>{"".join(map(str, p))}</section>'
        for sid, h, p in page.sections
    )
    title = html.escape(f"faceprobe report: {run.name}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>{missing}<nav>{nav}</nav>{body}"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
