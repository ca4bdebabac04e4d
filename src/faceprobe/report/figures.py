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
from collections.abc import Iterator
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

from faceprobe.report.tables import CONTROL, POOLED, vip_correlations

__all__ = [
    "OKABE_ITO",
    "REPRESENTATION_STYLE",
    "draw_panels",
    "draw_vip",
    "mean_over_seeds",
    "plot_depth_curves",
    "save_figure",
]

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency (yellow last: faint on white).
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
REPRESENTATION_STYLE = {
    "layer": {"color": "#0072B2", "marker": "o", "label": "whole layer (PLS+QDA)"},
    "channels": {"color": "#E69F00", "marker": "s", "label": "top-8 VIP channels"},
    "neurons": {"color": "#009E73", "marker": "^", "label": "top-8 VIP neurons"},
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_REFERENCE = {"color": "0.55", "linestyle": ":", "linewidth": 1.4}
_KIND_MARKS = {
    "block": {"marker": "o", "facecolor": "black", "label": "post-skip (block output)"},
    "residual": {"marker": "v", "facecolor": "white", "label": "residual-internal (before the add)"},
}


@contextmanager
def _text_as_data() -> Iterator[None]:
    """Names are drawn literally ($ is no math) and kept as text in SVG (searchable, editable)."""
    with plt.rc_context({"text.parse_math": False, "svg.fonttype": "none"}):
        yield


def _style(series: str, index: int) -> dict:
    if series in REPRESENTATION_STYLE:
        return REPRESENTATION_STYLE[series]
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "marker": _MARKERS[index % len(_MARKERS)],
        "linestyle": _LINESTYLES[(index // len(OKABE_ITO)) % len(_LINESTYLES)],
        "label": series,
    }


def _depth_axis(axes: list[plt.Axes], curves: pd.DataFrame) -> str:
    """Label the depth axis with layer names when every depth has one; returns the axis title."""
    layers = curves[["depth", "layer"]].drop_duplicates().sort_values("depth")
    if layers["depth"].duplicated().any():  # different models name the same depth differently
        return "depth (layer index)"
    shown = layers.iloc[:: math.ceil(len(layers) / 16)]
    axes[0].set_xticks(
        shown["depth"].to_numpy(), [f"{d} {n}" for d, n in zip(shown["depth"], shown["layer"], strict=True)]
    )
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    return "depth and layer"


def draw_panels(
    curves: pd.DataFrame,
    title: str,
    reference: pd.DataFrame | None = None,
    *,
    columns: int = 6,
    panel_legends: bool = False,
    mark_kinds: bool = False,
    ylabel: str = "val. accuracy (%)",
) -> Figure:
    """Accuracy over depth, one panel per ``panel`` value (in order of appearance), a curve per ``series``.

    ``curves`` has columns panel, series, depth, accuracy (a fraction), layer, and kind when ``mark_kinds``
    (post-skip and residual-internal points get their own markers: the sawtooth of thesis Fig. 5.8); an
    optional ``std`` column (spread over seeds, see :func:`mean_over_seeds`) is shaded around each curve.
    ``reference`` (series, depth, accuracy) is drawn grey in every panel: the Control_Random curves.
    ``panel_legends`` gives each panel its own legend, for panels whose series differ (groups).
    """
    panels = list(pd.unique(curves["panel"]))
    series = list(pd.unique(curves["series"]))
    columns = min(columns, len(panels))
    rows = math.ceil(len(panels) / columns)
    width = 2.7 * columns + 0.6
    with _text_as_data():
        fig, axes = plt.subplots(
            rows,
            columns,
            figsize=(width, 2.3 * rows + 1.4),
            sharex=True,
            sharey=True,
            squeeze=False,
            layout="constrained",
        )
        low = min(40.0, 100 * np.nanmin(curves["accuracy"].to_numpy(dtype=float)) - 2)
        banded = "std" in curves and bool(curves["std"].notna().any())
        for ax, panel in zip(axes.flat, panels, strict=False):
            sub = curves[curves["panel"] == panel]
            _draw_reference(ax, reference)
            for name, curve in sub.groupby("series", sort=False):
                curve = curve.sort_values("depth")
                style = _style(name, series.index(name))
                ax.plot(curve["depth"], 100 * curve["accuracy"], markersize=3, linewidth=1.2, **style)
                if banded:
                    low_band, high_band = (100 * (curve["accuracy"] + s * curve["std"]) for s in (-1, 1))
                    ax.fill_between(
                        curve["depth"], low_band, high_band, color=style["color"], alpha=0.2, linewidth=0
                    )
                if mark_kinds:
                    for kind, mark in _KIND_MARKS.items():
                        points = curve[curve["kind"] == kind]
                        ax.scatter(
                            points["depth"],
                            100 * points["accuracy"],
                            s=22,
                            marker=mark["marker"],
                            facecolor=mark["facecolor"],
                            edgecolor=style["color"],
                            zorder=3,
                        )
            ax.axhline(50, color="0.75", linewidth=0.8, linestyle="--")
            ax.set_title(str(panel), fontsize=9)
            ax.set_ylim(low, 101)
            ax.grid(alpha=0.3)
            if panel_legends:
                ax.legend(fontsize=6, loc="lower left", frameon=False)
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        xlabel = _depth_axis(list(axes.flat), curves)
        for ax in axes.flat[max(0, len(panels) - columns) : len(panels)]:
            ax.set_xlabel(xlabel, fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel, fontsize=8)
        if not panel_legends:
            handles, labels = _figure_handles(axes.flat[0], mark_kinds, banded)
            ncol = max(1, min(4, int(width / 2.2)))  # a narrow figure (one panel) stacks its legend
            fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, fontsize=8)
        fig.suptitle(textwrap.fill(title, max(30, int(10 * width))), fontsize=11)  # wrapped, never cropped
    return fig


def _draw_reference(ax: plt.Axes, reference: pd.DataFrame | None) -> None:
    if reference is None or reference.empty:
        return
    several = reference["series"].nunique() > 1
    for name, curve in reference.groupby("series", sort=False):
        curve = curve.sort_values("depth")
        label = f"Control_Random ({name})" if several else "Control_Random (random labels)"
        ax.plot(curve["depth"], 100 * curve["accuracy"], label=label, **_REFERENCE)


def _figure_handles(ax: plt.Axes, mark_kinds: bool, banded: bool) -> tuple[list, list[str]]:
    handles, labels = ax.get_legend_handles_labels()
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3))
        labels.append("shaded: mean ± std over seeds")
    if mark_kinds:
        for mark in _KIND_MARKS.values():
            handles.append(
                Line2D(
                    [], [], linestyle="", marker=mark["marker"], markerfacecolor=mark["facecolor"], color="k"
                )
            )
            labels.append(mark["label"])
    return handles, labels


def draw_vip(vip: pd.DataFrame, title: str) -> Figure:
    """Per source: the VIP histogram (log-scaled), VIP vs single-neuron accuracy, and mean positive activation
    vs accuracy (thesis Fig. 5.9). Control_Random neurons are grey. Each scatter is titled with the thesis's
    statistic, the mean over projections of per-projection r (see
    :func:`~faceprobe.report.tables.vip_correlations`), and the pooled r only after it: VIP scores of
    different projections are not comparable."""
    sources = list(pd.unique(vip["source"]))
    with _text_as_data():
        fig, axes = plt.subplots(
            len(sources), 3, figsize=(12, 3 * len(sources) + 0.8), squeeze=False, layout="constrained"
        )
        for row, source in zip(axes, sources, strict=True):
            sub = vip[vip["source"] == source]
            control = sub["attribute"] == CONTROL
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
            row[0].set(
                xscale="log", yscale="log", xlabel="VIP score", ylabel="neurons", title=f"{source}: VIP"
            )
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
                ax.set_title(_r_title(source, stats, column), fontsize=8)
                ax.grid(alpha=0.3)
            row[1].set_xscale("log")
            for axis in (row[0].xaxis, row[0].yaxis, row[1].xaxis):  # plain labels: math text is off
                axis.set_major_formatter(LogFormatter())
                axis.set_minor_formatter(NullFormatter())
            row[1].legend(fontsize=7, frameon=False)
        fig.suptitle(title, fontsize=11)
    return fig


def _r_title(source: str, stats: pd.DataFrame, measure: str) -> str:
    """The scatter's title: mean ± std of per-projection r over the projections, then the pooled r."""
    if measure not in stats.index:  # Control_Random neurons only
        return f"{source}: no attribute projection"
    row = stats.loc[measure]
    spread = f" ± {row['std r']:.3f}" if pd.notna(row["std r"]) else ""
    return (
        f"{source}: mean per-projection r = {row['mean r']:.3f}{spread} ({row['projections']} projections)"
        f"\npooled r = {row[POOLED]:.3f} (not the thesis statistic)"
    )


def save_figure(fig: Figure, stem: str | Path, data: pd.DataFrame, dpi: int = 90) -> dict[str, Path]:
    """Write the figure as ``stem.png`` and ``stem.svg`` and the numbers it plots as ``stem.csv``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {suffix: stem.with_suffix(f".{suffix}") for suffix in ("png", "svg", "csv")}
    with _text_as_data():
        fig.savefig(paths["png"], dpi=dpi)
        fig.savefig(paths["svg"])
    plt.close(fig)
    data.to_csv(paths["csv"], index=False)
    return paths


def mean_over_seeds(curves: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Curves averaged over seeds (sources), as the thesis reports means over runs: each source's mean
    accuracy per ``keys`` first (over the attributes of a group, say), then per ``keys`` the mean over
    sources, ``seeds`` (how many) and, where some point has several, ``std`` over them (the shaded band)."""
    per_seed = curves.groupby([*keys, "source"], sort=False, dropna=False)["accuracy"].mean().reset_index()
    grouped = per_seed.groupby(keys, sort=False, dropna=False)["accuracy"]
    table = grouped.agg(accuracy="mean", std="std", seeds="size").reset_index()
    return table if (table["seeds"] > 1).any() else table.drop(columns="std")


def depth_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Validation rows of the three representations as panels per attribute (Control_Random last)."""
    frame = results[(results["split"] == "val") & results["representation"].isin(REPRESENTATION_STYLE)]
    frame = frame.assign(
        panel=frame["attribute"], series=frame["representation"], last=frame["attribute"] == CONTROL
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
