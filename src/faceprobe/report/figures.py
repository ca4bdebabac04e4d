"""Figures drawn from result tables only (never from activations): what a reader looks at first.

Every depth view is one picture: small panels of accuracy over depth, one curve per series, with chance
(50%, balanced draws) and the Control_Random curve (random labels: how far a curve strays by overfitting
alone) drawn for reference. :func:`draw_panels` draws it from a tidy frame (panel, series, depth, accuracy,
layer), so the per-attribute curves, the groups, the residual view and the weight origins share one look.
The thesis reports means over runs: :func:`mean_over_seeds` averages curves over the seeds of a variant, and
their standard deviation is drawn as a shaded band.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogFormatter, NullFormatter

from faceprobe.controls import control_rows
from faceprobe.report.stats import wilson_interval
from faceprobe.report.tables import POOLED, vip_correlations

__all__ = [
    "DPI",
    "OKABE_ITO",
    "PAGE_WIDTH",
    "REPRESENTATION_STYLE",
    "draw_heatmap",
    "draw_panels",
    "draw_vip",
    "layer_positions",
    "mean_over_seeds",
    "plot_depth_curves",
    "representation_labels",
    "save_figure",
    "text_as_data",
]

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency (yellow last: faint on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
REPRESENTATION_STYLE = {
    "layer": {"color": "#0072B2", "marker": "o", "label": "whole layer (PLS+QDA)"},
    "channels": {"color": "#E69F00", "marker": "s", "label": "top-8 VIP channels"},
    "neurons": {"color": "#009E73", "marker": "^", "label": "top-8 VIP neurons"},
}
#: The model each kind's headline metric is read by: a legend that says QDA over a regression would mislead.
_PROBE_MODELS = {"accuracy": "PLS+QDA", "balanced_accuracy": "PLS-DA+QDA", "r2": "PLS regression, no QDA"}


def representation_labels(metric: str = "accuracy", top_k: int | None = 8) -> dict[str, str]:
    """Legend labels of the pooled representations for targets scored by ``metric``: the whole layer names
    its model (binary PLS+QDA, multi-class PLS-DA+QDA, continuous PLS regression), the top-k ones the
    study's ``top_k`` (None: runs that differ, "top-k")."""
    k = "k" if top_k is None else str(top_k)
    return {
        "layer": f"whole layer ({_PROBE_MODELS[metric]})",
        "channels": f"top-{k} VIP channels",
        "neurons": f"top-{k} VIP neurons",
    }


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_REFERENCE = {"color": "0.55", "linestyle": ":", "linewidth": 1.4}
_KIND_MARKS = {
    "block": {"marker": "o", "facecolor": "black", "label": "post-skip (block output)"},
    "residual": {"marker": "v", "facecolor": "white", "label": "residual-internal (before the add)"},
}


@contextmanager
def text_as_data() -> Iterator[None]:
    """Names are drawn literally ($ is no math) and kept as text in SVG (searchable, editable)."""
    with plt.rc_context({"text.parse_math": False, "svg.fonttype": "none"}):
        yield


def _style(series: str, index: int, labels: Mapping[str, str] | None = None) -> dict:
    if series in REPRESENTATION_STYLE:
        style = REPRESENTATION_STYLE[series]
        return {**style, "label": labels[series]} if labels and series in labels else style
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "linestyle": _LINESTYLES[(index // len(OKABE_ITO)) % len(_LINESTYLES)],
        "label": series,
    }


#: Width of a full-page figure in inches, and the resolution of its PNG: 15 in at 96 dpi is the page's
#: 1440 px, so figures are drawn at the size they are shown and their text at its size.
PAGE_WIDTH = 15.0
DPI = 96
#: Characters per inch of 1 pt text, about: DejaVu Sans averages 0.55 em per character.
_CHAR_IN = 0.55 / 72


def _text_width(text: str, size: float) -> float:
    """About how many inches ``text`` takes at ``size`` points (for laying out legends and labels)."""
    return max((len(line) for line in str(text).splitlines()), default=0) * size * _CHAR_IN


def _fill(text: str, width_in: float, size: float) -> str:
    """``text`` wrapped to ``width_in`` inches at ``size`` points: titles are wrapped, never cropped."""
    return textwrap.fill(str(text), max(12, int(width_in / (size * _CHAR_IN))), break_long_words=True)


def _short(name: str, limit: int = 28) -> str:
    """A layer name cut to ``limit`` characters from the left (its end says most); CSVs keep it whole."""
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def layer_positions(*frames: pd.DataFrame | None) -> dict[int, int]:
    """Depth -> position on the x axis: the probed depths, spaced evenly (a catalogue's depths crowd where
    a block has many inner layers and leave gaps between blocks)."""
    depths = sorted({int(d) for f in frames if f is not None and not f.empty for d in f["depth"]})
    return {d: i for i, d in enumerate(depths)}


def _depth_axis(axes: list[plt.Axes], curves: pd.DataFrame, at: dict[int, int], panel_width: float) -> str:
    """Ticks at the evenly spaced layers, labelled ``depth name`` when every depth has one name (depth only
    when models name one depth differently), as many as fit the panel; returns the axis title."""
    layers = curves[["depth", "layer"]].drop_duplicates().sort_values("depth")
    named = not layers["depth"].duplicated().any()
    depths = sorted(at)
    fit = max(2, int(panel_width / (6 * 1.6 / 72)))  # rotated 6 pt labels, 1.6 line heights apart
    shown = depths[:: math.ceil(len(depths) / fit)]
    names = dict(zip(layers["depth"], layers["layer"], strict=True)) if named else {}
    labels = [f"{d} {_short(str(names[d]))}" if d in names else str(d) for d in shown]
    axes[0].set_xticks([at[d] for d in shown], labels)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
        ax.set_xlim(-0.5, max(len(depths) - 0.5, 0.5))
    return "layer (evenly spaced): depth and name" if named else "layer (evenly spaced): depth"


def draw_panels(
    curves: pd.DataFrame,
    title: str,
    reference: pd.DataFrame | None = None,
    *,
    columns: int = 6,
    panel_legends: bool = False,
    mark_kinds: bool = False,
    ylabel: str = "val. accuracy (%)",
    selectivity: bool = False,
    chance: float | Mapping[str, float] = 0.5,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Accuracy over depth, one panel per ``panel`` value (in order of appearance), a curve per ``series``.

    ``curves`` has columns panel, series, depth, accuracy (a fraction), layer, and kind when ``mark_kinds``
    (post-skip and residual-internal points get their own markers: the sawtooth of thesis Fig. 5.8). With an
    ``n_eval`` column (the images behind each point) the 95% Wilson interval is shaded around each curve;
    an optional ``std`` column (spread over seeds, see :func:`mean_over_seeds`) is drawn as error bars.
    ``reference`` (series, depth, accuracy) is drawn grey in every panel: the Control_Random curves.
    ``panel_legends`` gives each panel its own legend beside it, for panels whose series differ (groups).
    ``selectivity``: the values are accuracies less the controls' (fractions, negative too), drawn in points
    around a line at 0 (where a probe does no better than on random labels) instead of chance at 50%.
    ``chance`` is where a probe that learned nothing lies, dashed (a fraction): 0.5 for accuracy on balanced
    draws, 1/classes for balanced accuracy, 0 for R^2 (the mean predictor; a value far below it is clipped);
    a mapping gives each panel its own. ``labels`` replaces the representations' legend labels (see
    :func:`representation_labels`).

    Layers are spaced evenly (ticks name their depth and layer). The figure is as wide as the page (half of
    it for one panel), and every text is placed by the layout: nothing is clipped at any number of panels.
    """
    panels = list(pd.unique(curves["panel"]))
    series = list(pd.unique(curves["series"]))
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    width = PAGE_WIDTH if columns > 1 else PAGE_WIDTH / 2
    at = layer_positions(curves, reference)
    colours = {str(name): _style(name, i)["color"] for i, name in enumerate(series)}
    legend_room = 0.0
    if panel_legends:  # each panel's legend beside it takes part of its width
        longest = max((_text_width(s, 6) for s in series), default=0)
        legend_room = min(longest + 0.5, 0.45 * width / columns)
    panel_width = width / columns - legend_room
    layers = curves[["depth", "layer"]].drop_duplicates()
    label_room = max(
        (
            _text_width(f"{d} {_short(str(n))}", 6)
            for d, n in zip(layers["depth"], layers["layer"], strict=True)
        ),
        default=0,
    )
    height = rows * max(1.9, min(3.0, 0.7 * panel_width)) + label_room + 1.2
    with text_as_data():
        fig, axes = plt.subplots(
            rows,
            columns,
            figsize=(width, height),
            sharex=True,
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        shown = [curves["accuracy"].to_numpy(dtype=float)]
        if reference is not None and not reference.empty:
            shown.append(reference["accuracy"].to_numpy(dtype=float))
        values = 100 * np.concatenate(shown)
        chances = {p: chance.get(p, 0.5) if isinstance(chance, Mapping) else chance for p in panels}
        least = 100 * min(chances.values(), default=0.5)
        low = min(-10.0, np.nanmin(values) - 2) if selectivity else min(least - 10, np.nanmin(values) - 2)
        low = max(low, least - 60)  # an R^2 far below the mean predictor's would flatten the rest
        high = max(10.0, np.nanmax(values) + 2) if selectivity else 101
        banded = "n_eval" in curves and bool(curves["n_eval"].notna().any())
        spread = "std" in curves and bool(curves["std"].notna().any())
        references = set(_reference_labels(reference).values())
        for ax, panel in zip(axes.flat, panels, strict=False):
            sub = curves[curves["panel"] == panel]
            _draw_reference(ax, reference, at, colours)
            for name, curve in sub.groupby("series", sort=False):
                curve = curve.sort_values("depth")
                x = curve["depth"].map(at).to_numpy(float)
                y = 100 * curve["accuracy"].to_numpy(float)
                style = _style(name, series.index(name), labels)
                line = {k: v for k, v in style.items() if k != "label"}
                label = (
                    _fill(style["label"], 0.9 * max(legend_room - 0.4, 1.0), 6)
                    if panel_legends
                    else style["label"]
                )
                ax.plot(x, y, markersize=3, linewidth=1.2, label=label, **line)
                if banded:
                    lo, hi = wilson_interval(
                        curve["accuracy"].to_numpy(float), curve["n_eval"].to_numpy(float)
                    )
                    ax.fill_between(x, 100 * lo, 100 * hi, color=style["color"], alpha=0.15, linewidth=0)
                if spread:
                    ax.errorbar(
                        x,
                        y,
                        yerr=100 * curve["std"].fillna(0).to_numpy(float),
                        fmt="none",
                        ecolor=style["color"],
                        elinewidth=0.8,
                        capsize=1.5,
                        alpha=0.8,
                    )
                if mark_kinds:
                    for kind, mark in _KIND_MARKS.items():
                        points = curve[curve["kind"] == kind]
                        ax.scatter(
                            points["depth"].map(at),
                            100 * points["accuracy"],
                            s=22,
                            marker=mark["marker"],
                            facecolor=mark["facecolor"],
                            edgecolor=style["color"],
                            zorder=3,
                        )
            ax.axhline(
                0 if selectivity else 100 * chances[panel], color="0.75", linewidth=0.8, linestyle="--"
            )
            ax.set_title(_fill(panel, panel_width, 9), fontsize=9)
            ax.set_ylim(low, high)
            ax.grid(alpha=0.3)
            if panel_legends:  # the panel's own curves; the reference is in the figure's legend
                own = [
                    (h, t)
                    for h, t in zip(*ax.get_legend_handles_labels(), strict=True)
                    if t not in references
                ]
                ax.legend(
                    [h for h, _ in own],
                    [t for _, t in own],
                    fontsize=6,
                    loc="upper left",
                    bbox_to_anchor=(1.01, 1.0),
                    frameon=False,
                    borderaxespad=0,
                )
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        xlabel = _depth_axis(list(axes.flat), curves, at, panel_width)
        for ax in axes.flat[max(0, len(panels) - columns) : len(panels)]:
            ax.set_xlabel(xlabel, fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel, fontsize=8)
        handles, labels = _figure_handles(
            list(axes.flat), mark_kinds, banded, spread, panel_legends, references
        )
        if handles:
            fig.set_size_inches(width, height + _figure_legend(fig, handles, labels, width))
        fig.suptitle(_fill(title, width - 0.3, 11), fontsize=11)
    return fig


def _figure_legend(fig: Figure, handles: list, labels: list[str], width: float) -> float:
    """The figure's legend below the panels, in as many columns as its longest entry allows (an entry wider
    than the figure is wrapped): never wider than the figure, so never cut. Returns its height in inches,
    which the figure grows by, so the panels keep theirs."""
    size = 8
    usable = width - 0.4
    labels = [_fill(text, usable - 0.6, size) for text in labels]
    entry = max(_text_width(text, size) for text in labels) + 0.6  # handle and padding
    ncol = max(1, min(len(labels), int(usable // entry)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, fontsize=size)
    lines = sum(
        max(text.count("\n") + 1 for text in labels[row * ncol : (row + 1) * ncol])
        for row in range(math.ceil(len(labels) / ncol))
    )
    return lines * size * 1.45 / 72 + 0.15


def _reference_labels(reference: pd.DataFrame | None) -> dict[str, str]:
    """Each reference series' legend label: legends tell the control curves from the others by them."""
    if reference is None or reference.empty:
        return {}
    names = list(pd.unique(reference["series"]))
    if len(names) == 1:
        return {names[0]: "Control_Random (random labels)"}
    return {name: f"Control_Random ({name})" for name in names}


def _draw_reference(
    ax: plt.Axes, reference: pd.DataFrame | None, at: dict[int, int], colours: dict[str, str]
) -> None:
    """The Control_Random curves, dotted: grey when there is one, else each in the colour of the curve
    of the same series (its weight origin, its run) so that each control can be told apart."""
    labels = _reference_labels(reference)
    if reference is None or not labels:
        return
    for name, curve in reference.groupby("series", sort=False):
        curve = curve.sort_values("depth")
        style = dict(_REFERENCE)
        if len(labels) > 1 and name in colours:
            style["color"] = colours[name]
        ax.plot(curve["depth"].map(at), 100 * curve["accuracy"], label=labels[name], **style)


def _figure_handles(
    axes: list[plt.Axes],
    mark_kinds: bool,
    banded: bool,
    spread: bool,
    panel_legends: bool,
    references: set[str],
) -> tuple[list, list[str]]:
    """The shared legend: the curves (unless each panel has its own), the ``references`` (labels of the
    control curves), and what bands, bars and markers mean."""
    handles, labels = [], []
    for one in axes:  # a series may be missing from the first panel
        for handle, label in zip(*one.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if panel_legends:  # only the reference curves are common to all panels
        kept = [(h, t) for h, t in zip(handles, labels, strict=True) if t in references]
        handles, labels = [h for h, _ in kept], [t for _, t in kept]
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append("shaded: 95% interval (Wilson, from the images scored)")
    if spread:
        handles.append(Line2D([], [], color="0.3", marker="|", linestyle="", markersize=8))
        labels.append("bars: ± std over seeds")
    if mark_kinds:
        for mark in _KIND_MARKS.values():
            handles.append(
                Line2D(
                    [], [], linestyle="", marker=mark["marker"], markerfacecolor=mark["facecolor"], color="k"
                )
            )
            labels.append(mark["label"])
    return handles, labels


def draw_heatmap(matrix: pd.DataFrame, title: str, few: bool = False) -> Figure:
    """Attribute x layer accuracy at a glance: ``matrix`` has one row per attribute and one column per
    layer (labelled ``depth name``, in depth order), values as fractions. Each cell prints its percentage
    where the cells are wide enough; ``few`` notes that its accuracies rest on too few images."""
    n_rows, n_cols = matrix.shape
    label_room = max((_text_width(str(c), 7) for c in matrix.columns), default=0)
    name_room = max((_text_width(str(i), 7) for i in matrix.index), default=0)
    width = PAGE_WIDTH if n_cols > 8 else PAGE_WIDTH / 2
    height = 0.22 * n_rows + label_room + 1.8
    with text_as_data():
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
        values = 100 * matrix.to_numpy(dtype=float)
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=50, vmax=100, interpolation="nearest")
        fit = max(2, int((width - name_room - 1.5) / (7 * 1.6 / 72)))  # rotated 7 pt labels that fit
        shown = list(range(n_cols))[:: math.ceil(n_cols / fit)]
        ax.set_xticks(shown, [str(matrix.columns[j]) for j in shown], rotation=90, fontsize=7)
        ax.set_yticks(range(n_rows), [str(i) for i in matrix.index], fontsize=7)
        cell = (width - name_room - 1.5) / max(n_cols, 1)
        if cell > 0.3:
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if value > 80 else "white",
                    )
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
        bar.set_label("whole-layer val. accuracy (%)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        ax.set_xlabel("layer: depth and name (evenly spaced)", fontsize=8)
        note = " (few images: read differences with care)" if few else ""
        fig.suptitle(_fill(title + note, width - 0.3, 11), fontsize=11)
    return fig


def draw_vip(vip: pd.DataFrame, title: str) -> Figure:
    """Per source: the VIP histogram (log-scaled), VIP vs single-neuron accuracy, and mean positive activation
    vs accuracy (thesis Fig. 5.9). Control_Random neurons are grey. Each scatter is titled with the thesis's
    statistic, the mean over projections of per-projection r (see
    :func:`~faceprobe.report.tables.vip_correlations`), and the pooled r only after it: VIP scores of
    different projections are not comparable."""
    sources = list(pd.unique(vip["source"]))
    with text_as_data():
        fig, axes = plt.subplots(
            len(sources),
            3,
            figsize=(PAGE_WIDTH, 4.2 * len(sources) + 1.0),
            squeeze=False,
            layout="constrained",
        )
        for row, source in zip(axes, sources, strict=True):
            sub = vip[vip["source"] == source]
            control = control_rows(sub["attribute"])
            stats = vip_correlations(sub).set_index("measure")
            positive = sub["vip"][sub["vip"] > 0]
            spread = len(positive) > 1 and positive.min() < positive.max()
            bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 30) if spread else 30
            row[0].hist(
                [sub["vip"][~control], sub["vip"][control]],
                bins=bins,
                stacked=True,
                color=[OKABE_ITO[0], "0.6"],
                label=["attributes", "Control_Random"],
            )
            row[0].legend(fontsize=7, frameon=False)
            row[0].set(xscale="log", yscale="log", xlabel="VIP score", ylabel="neurons")
            row[0].set_title(_fill(f"{source}: VIP", PAGE_WIDTH / 3 - 0.8, 8), fontsize=8)
            for ax, column in zip(row[1:], ("vip", "mean_positive"), strict=True):
                ax.scatter(
                    sub[column][~control],
                    100 * sub["accuracy"][~control],
                    s=8,
                    color=OKABE_ITO[1],
                    label="attributes",
                )
                ax.scatter(
                    sub[column][control],
                    100 * sub["accuracy"][control],
                    s=8,
                    color="0.6",
                    label="Control_Random",
                )
                ax.axhline(50, color="0.75", linewidth=0.8, linestyle="--")
                ax.set(xlabel=column.replace("_", " "), ylabel="single-neuron val. accuracy (%)")
                lines = _r_title(source, stats, column).split("\n")
                ax.set_title("\n".join(_fill(t, PAGE_WIDTH / 3 - 0.8, 8) for t in lines), fontsize=8)
                ax.grid(alpha=0.3)
            row[1].set_xscale("log")
            for axis in (row[0].xaxis, row[0].yaxis, row[1].xaxis):  # plain labels: math text is off
                axis.set_major_formatter(LogFormatter())
                axis.set_minor_formatter(NullFormatter())
            row[1].legend(fontsize=7, frameon=False)
        fig.suptitle(_fill(title, PAGE_WIDTH - 0.3, 11), fontsize=11)
    return fig


def _r_title(source: str, stats: pd.DataFrame, measure: str) -> str:
    """The scatter's title: the mean of per-projection r with its 95% interval and n, then the pooled r."""
    if measure not in stats.index:  # Control_Random neurons only
        return f"{source}: no attribute projection"
    row = stats.loc[measure]
    interval = f" [{row['mean r low']:.2f}, {row['mean r high']:.2f}]" if pd.notna(row["mean r low"]) else ""
    spread = f", std {row['std r']:.3f}" if pd.notna(row["std r"]) else ""
    return (
        f"{source}: mean per-projection r = {row['mean r']:.3f}{interval} (95% CI; "
        f"{row['projections']} projections, {row['neurons']} neurons{spread})"
        f"\npooled r = {row[POOLED]:.3f} (not the thesis statistic)"
    )


def save_figure(fig: Figure, stem: str | Path, data: pd.DataFrame, dpi: int = DPI) -> dict[str, Path]:
    """Write the figure as ``stem.png`` and ``stem.svg`` and the numbers it plots as ``stem.csv``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {suffix: stem.with_suffix(f".{suffix}") for suffix in ("png", "svg", "csv")}
    with text_as_data():
        fig.savefig(paths["png"], dpi=dpi)
        fig.set_layout_engine("none")  # the layout is the PNG's: the SVG keeps it instead of solving it again
        fig.savefig(paths["svg"])
    plt.close(fig)
    data.to_csv(paths["csv"], index=False)
    return paths


def mean_over_seeds(curves: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Curves averaged over seeds (sources), as the thesis reports means over runs: each source's mean
    accuracy per ``keys`` first (over the attributes of a group, say), then per ``keys`` the mean over
    sources, ``seeds`` (how many) and, where some point has several, ``std`` over them (the error bars).

    ``n_eval``, where the curves have it, becomes the images behind each mean (summed over what it
    averages): its Wilson interval is the sampling error of the evaluation images, not the spread of seeds.
    """
    counted = "n_eval" in curves
    aggregate = {"accuracy": ("accuracy", "mean")} | ({"n_eval": ("n_eval", "sum")} if counted else {})
    per_seed = curves.groupby([*keys, "source"], sort=False, dropna=False).agg(**aggregate).reset_index()
    grouped = per_seed.groupby(keys, sort=False, dropna=False)
    spec = {"accuracy": ("accuracy", "mean"), "std": ("accuracy", "std"), "seeds": ("accuracy", "size")}
    table = grouped.agg(**spec, **({"n_eval": ("n_eval", "sum")} if counted else {})).reset_index()
    return table if (table["seeds"] > 1).any() else table.drop(columns="std")


def depth_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Validation rows of the three representations as panels per attribute (Control_Random last)."""
    frame = results[(results["split"] == "val") & results["representation"].isin(REPRESENTATION_STYLE)]
    frame = frame.assign(
        panel=frame["attribute"], series=frame["representation"], last=control_rows(frame["attribute"])
    )
    return frame.sort_values(["last", "attribute", "depth"]).drop(columns="last")


def plot_depth_curves(results: pd.DataFrame, path: str | Path, title: str = "", columns: int = 6) -> Path:
    """Validation accuracy over depth, one small panel per attribute, one curve per representation.

    The chance level (50%, balanced draws) is drawn in every panel; the Control_Random attribute (random
    labels) shows how far a curve may stray from it by overfitting alone.
    """
    fig = draw_panels(depth_curves(results), title, columns=columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
