"""Probing across training: how each attribute's accuracy over depth changed as a network trained.

A study that names a training folder as its weights (``epochs:DIR``) probes one model per kept epoch; its
result rows carry their ``epoch``. For every network probed at two or more epochs this view draws, per
attribute, a heat map of whole-layer validation accuracy over layer and epoch, and the same numbers as one
curve per epoch: whether identity training suppresses an attribute as it converges is then one figure.

Like every view of the report it reads result rows only. A network is the ``variant`` less its digest and
its ``/epoch-N`` suffix (which :mod:`faceprobe.run.entries` gives every epoch's name), so the epochs of one
training run line up and the seeds of an epoch are averaged.
"""

from __future__ import annotations

import html
import math
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from faceprobe.controls import control_rows
from faceprobe.report.figures import PAGE_WIDTH, draw_panels, mean_over_seeds, text_as_data

__all__ = ["HEADING", "draw_epoch_heatmaps", "epoch_curves", "training_section"]

#: The report section this view fills, present only for runs with several epochs of a network.
HEADING = "Across training"
_KEYS = ["network", "attribute", "epoch", "depth", "layer"]


def _networks(rows: pd.DataFrame) -> pd.Series:
    """Each row's network: its variant less ``#DIGEST`` and less the ``/epoch-N`` of its own epoch."""
    label = rows["variant"].astype(str).str.rsplit("#", n=1).str[0]
    suffix = "/epoch-" + rows["epoch"].astype(int).astype(str)
    return pd.Series(
        [name[: -len(end)] if name.endswith(end) else name for name, end in zip(label, suffix, strict=True)],
        index=rows.index,
        dtype=object,
    )


def epoch_curves(results: pd.DataFrame) -> pd.DataFrame:
    """Whole-layer validation accuracy per network, attribute, epoch and layer, averaged over seeds.

    Only rows of epoch models (``epoch`` >= 0) of networks probed at two or more epochs count; columns
    network, attribute, epoch, depth, layer, accuracy, seeds (and std where an epoch has several seeds,
    n_eval where the rows have it). Empty when no network qualifies, or for runs from before the column.
    """
    if "epoch" not in results or "variant" not in results:
        return pd.DataFrame(columns=[*_KEYS, "accuracy", "seeds"])
    epoch = pd.to_numeric(results["epoch"], errors="coerce").fillna(-1)
    rows = results[
        (epoch >= 0) & (results["representation"] == "layer") & (results["split"] == "val")
    ].dropna(subset=["accuracy"])
    if rows.empty:
        return pd.DataFrame(columns=[*_KEYS, "accuracy", "seeds"])
    rows = rows.assign(
        epoch=rows["epoch"].astype(int),
        network=_networks(rows),
        source=rows["source"] if "source" in rows else rows["model"],
    )
    several = rows.groupby("network")["epoch"].nunique()
    rows = rows[rows["network"].isin(several[several >= 2].index)]
    if rows.empty:
        return pd.DataFrame(columns=[*_KEYS, "accuracy", "seeds"])
    counted = ["n_eval"] if "n_eval" in rows else []
    curves = mean_over_seeds(rows[[*_KEYS, "source", "accuracy", *counted]], _KEYS)
    last = control_rows(curves["attribute"])  # the random-label controls last, as in every depth view
    return (
        curves.assign(last=last)
        .sort_values(["network", "last", "attribute", "epoch", "depth"])
        .drop(columns="last")
        .reset_index(drop=True)
    )


def draw_epoch_heatmaps(curves: pd.DataFrame, title: str, columns: int = 3) -> Figure:
    """One heat map per attribute (panels in order of appearance): layers across in depth order, epochs
    down from the first, each cell the whole-layer validation accuracy (50-100% on one shared scale)."""
    attributes = list(pd.unique(curves["attribute"]))
    epochs = sorted(int(e) for e in curves["epoch"].unique())
    layers = curves[["depth", "layer"]].drop_duplicates("depth").sort_values("depth")
    columns = max(1, min(columns, len(attributes)))
    rows = math.ceil(len(attributes) / columns)
    width = PAGE_WIDTH if columns > 1 else PAGE_WIDTH / 2
    panel_width = width / columns
    names = [f"{d} {n if len(str(n)) <= 24 else '…' + str(n)[-23:]}" for d, n in layers.itertuples(False)]
    label_room = 0.05 * max((len(name) for name in names), default=1) + 0.4
    height = rows * (0.22 * len(epochs) + 0.9 + label_room) + 1.0
    with text_as_data():
        fig, axes = plt.subplots(
            rows, columns, figsize=(width, height), squeeze=False, layout="constrained", sharex=True
        )
        image = None
        for ax, attribute in zip(axes.flat, attributes, strict=False):
            grid = (
                curves[curves["attribute"] == attribute]
                .pivot_table(index="epoch", columns="depth", values="accuracy", aggfunc="mean")
                .reindex(index=epochs, columns=list(layers["depth"]))
            )
            values = 100 * grid.to_numpy(dtype=float)
            image = ax.imshow(
                values, aspect="auto", cmap="viridis", vmin=50, vmax=100, interpolation="nearest"
            )
            if panel_width / max(len(layers), 1) > 0.3 and len(epochs) <= 12:
                for (i, j), value in np.ndenumerate(values):
                    if np.isfinite(value):
                        colour = "black" if value > 80 else "white"
                        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=colour)
            ax.set_yticks(range(len(epochs)), [str(e) for e in epochs], fontsize=6)
            ax.set_xticks(range(len(layers)), names, fontsize=6, rotation=90)
            ax.set_title(textwrap.shorten(str(attribute), 60), fontsize=9)
        for ax in axes.flat[len(attributes) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("epoch", fontsize=8)
        for ax in axes.flat[max(0, len(attributes) - columns) : len(attributes)]:
            ax.set_xlabel("layer (evenly spaced): depth and name", fontsize=8)
            ax.xaxis.set_tick_params(labelbottom=True)
        if image is not None:
            bar = fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
            bar.set_label("whole-layer val. accuracy (%)", fontsize=8)
            bar.ax.tick_params(labelsize=7)
        fig.suptitle(textwrap.fill(title, int(width * 12)), fontsize=11)
    return fig


def training_section(page: Any, results: pd.DataFrame) -> None:
    """Add the section :data:`HEADING` to the report ``page`` (its ``section`` and ``figure``), with a heat
    map and per-epoch curves per network probed at several epochs; nothing when the run has none."""
    curves = epoch_curves(results)
    if curves.empty:
        return
    parts = page.section(HEADING)
    parts.append(
        '<p class="note">'
        + html.escape(
            "Each kept epoch of a training run (weights epochs:DIR) was probed as a model of its own. Per "
            "attribute: whole-layer validation accuracy over layer and epoch, as a heat map and as one curve "
            "per epoch; Control_Random (random labels) shows what a layer reaches by chance."
        )
        + "</p>"
    )
    for network, sub in curves.groupby("network", sort=False):
        epochs = sorted(int(e) for e in sub["epoch"].unique())
        seeds = int(sub["seeds"].max())
        over = f", mean over {seeds} seeds" if seeds > 1 else ""
        span = f"epochs {', '.join(map(str, epochs))}"
        title = f"{network}: whole-layer validation accuracy over layer and epoch ({span}{over})"
        page.figure(parts, f"training-heatmap-{network}", draw_epoch_heatmaps(sub, title), sub, title)
        lines = sub.assign(panel=sub["attribute"], series="epoch " + sub["epoch"].astype(str))
        title = f"{network}: validation accuracy over depth, one curve per epoch ({span}{over})"
        page.figure(parts, f"training-curves-{network}", draw_panels(lines, title), lines, title)
