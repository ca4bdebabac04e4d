"""Figures drawn from result tables only (never from activations): what a reader looks at first."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

__all__ = ["REPRESENTATION_STYLE", "plot_depth_curves"]

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
REPRESENTATION_STYLE = {
    "layer": {"color": "#0072B2", "marker": "o", "label": "whole layer (PLS+QDA)"},
    "channels": {"color": "#E69F00", "marker": "s", "label": "top-8 VIP channels"},
    "neurons": {"color": "#009E73", "marker": "^", "label": "top-8 VIP neurons"},
}


def plot_depth_curves(results: pd.DataFrame, path: str | Path, title: str = "", columns: int = 6) -> Path:
    """Validation accuracy over depth, one small panel per attribute, one curve per representation.

    The chance level (50%, balanced draws) is drawn in every panel; the Control_Random attribute (random
    labels) shows how far a curve may stray from it by overfitting alone.
    """
    frame = results[(results["split"] == "val") & results["representation"].isin(REPRESENTATION_STYLE)]
    attributes = sorted(frame["attribute"].unique(), key=lambda a: (a == "Control_Random", a))
    rows = math.ceil(len(attributes) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.6 * columns, 2.1 * rows + 0.9), sharex=True, sharey=True, squeeze=False
    )
    layers = frame.drop_duplicates("depth").sort_values("depth")
    for ax, attribute in zip(axes.flat, attributes, strict=False):
        sub = frame[frame["attribute"] == attribute]
        for representation, style in REPRESENTATION_STYLE.items():
            curve = sub[sub["representation"] == representation].sort_values("depth")
            ax.plot(
                curve["depth"],
                100 * curve["accuracy"],
                color=style["color"],
                marker=style["marker"],
                markersize=3,
                linewidth=1.2,
                label=style["label"],
            )
        ax.axhline(50, color="0.6", linewidth=0.8, linestyle="--")
        ax.set_title(attribute, fontsize=9)
        ax.set_ylim(40, 101)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(attributes) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("depth (layer index)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("val. accuracy (%)", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    inch = 1 / fig.get_figheight()  # figure fraction of one inch: title and legend get fixed room
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.25 * inch),
        ncol=3,
        frameon=False,
        fontsize=9,
    )
    depth_names = ", ".join(f"{d}={n}" for d, n in zip(layers["depth"], layers["layer"], strict=True))
    fig.suptitle(title, y=1 - 0.05 * inch, fontsize=11)
    fig.text(0.5, 0.002, f"layers: {depth_names}", ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.3 * inch, 1, 1 - 0.5 * inch))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
