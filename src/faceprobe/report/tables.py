"""The thesis's tables from result rows: best units vs the baseline (5.2), averages (5.3), ablation (5.4).

Units are chosen on the validation split and reported on the test split when the run has one, as the
thesis does: choosing and reporting on the same rows would flatter the best unit. Tables are written as CSV
(raw fractions, for scripts) and Markdown (percentages, for reading).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CONTROL",
    "ablation_drops",
    "baseline_accuracy",
    "best_units",
    "representation_averages",
    "table_html",
    "vip_correlations",
    "write_table",
]

#: The random-label attribute: a reference in every view, never part of an average.
CONTROL = "Control_Random"
_KEY = ["source", "layer", "attribute", "representation", "unit"]
_REPRESENTATIONS = ("layer", "channels", "neurons", "channel", "neuron")
#: Columns holding fractions of 1, shown as percentages.
_PERCENT = ("accuracy", "baseline", "gap", "drop")


def baseline_accuracy(baseline: pd.DataFrame | None) -> pd.Series | None:
    """The multitask baseline per attribute, on the test split when it has one (like the probes)."""
    if baseline is None or baseline.empty:
        return None
    split = "test" if (baseline["split"] == "test").any() else "val"
    return baseline[baseline["split"] == split].groupby("attribute")["accuracy"].mean()


def best_units(results: pd.DataFrame, baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per source, attribute and representation: the best layer (and unit) on val, its accuracy on test.

    With a baseline, ``gap`` is the baseline minus the best whole-layer accuracy, and rows are ordered by it
    (the attributes the network encodes closest to a supervised model first), as in thesis Table 5.2.
    """
    scored = results.dropna(subset=["accuracy"])
    if "unit" not in scored:
        scored = scored.assign(unit=-1)
    val = scored[scored["split"] == "val"]
    best = val.loc[val.groupby(["source", "attribute", "representation"])["accuracy"].idxmax()]
    test = scored[scored["split"] == "test"][[*_KEY, "accuracy"]]
    best = best[[*_KEY, "depth", "accuracy"]].rename(columns={"accuracy": "val_accuracy"})
    best = best.merge(test.rename(columns={"accuracy": "test_accuracy"}), on=_KEY, how="left")
    best["split"] = np.where(best["test_accuracy"].notna(), "test", "val")
    best["accuracy"] = best["test_accuracy"].fillna(best["val_accuracy"])
    wide = best.pivot_table(
        index=["source", "attribute"],
        columns="representation",
        values=["layer", "unit", "accuracy", "split"],
        aggfunc="first",
    )
    order = [r for r in _REPRESENTATIONS if r in set(best["representation"])]
    columns = {}
    for rep in order:
        columns[f"{rep} layer"] = wide[("layer", rep)]
        if rep in ("channel", "neuron"):
            columns[f"{rep} unit"] = wide[("unit", rep)].astype("Int64")
        columns[f"{rep} accuracy"] = wide[("accuracy", rep)].astype(float)
    table = pd.DataFrame(columns).reset_index()
    table["split"] = wide[("split", order[0])].to_numpy()
    ceiling = baseline_accuracy(baseline)
    if ceiling is not None and "layer accuracy" in table:
        table["baseline"] = table["attribute"].map(ceiling)
        table["gap"] = table["baseline"] - table["layer accuracy"]
        return table.sort_values(["source", "gap", "attribute"], na_position="last").reset_index(drop=True)
    return table.sort_values(["source", "attribute"]).reset_index(drop=True)


def representation_averages(best: pd.DataFrame) -> pd.DataFrame:
    """Mean best accuracy over attributes per source and representation (thesis Table 5.3), no control."""
    real = best[best["attribute"] != CONTROL]
    rows = [
        {
            "source": source,
            "representation": column.removesuffix(" accuracy"),
            "attributes": int(group[column].notna().sum()),
            "accuracy": group[column].mean(),
        }
        for source, group in real.groupby("source")
        for column in group.columns
        if column.endswith(" accuracy")
    ]
    if "baseline" in real:
        base = real.drop_duplicates("attribute")["baseline"]
        rows.append(
            {
                "source": "multitask baseline",
                "representation": "baseline",
                "attributes": int(base.notna().sum()),
                "accuracy": base.mean(),
            }
        )
    return pd.DataFrame(rows)


def ablation_drops(ablation: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy drop of later layers' probes per ablated layer, fraction and representation (5.4)."""
    real = ablation[ablation["attribute"] != CONTROL]
    keys = ["source", "ablated_layer", "ablated_depth", "fraction", "representation"]
    table = (
        real.groupby(keys)
        .agg(
            n_ablated=("n_ablated", "max"),
            probes=("drop", "size"),
            baseline=("baseline_accuracy", "mean"),
            accuracy=("accuracy", "mean"),
            drop=("drop", "mean"),
        )
        .reset_index()
    )
    return table.sort_values(["source", "ablated_depth", "fraction", "representation"]).reset_index(drop=True)


def vip_correlations(vip: pd.DataFrame) -> pd.DataFrame:
    """Pearson r of single-neuron accuracy with VIP and with mean positive activation (thesis Fig. 5.9).

    One row per source over all its sampled neurons (``layer`` and ``attribute`` are "all"), then one per
    (source, layer, attribute) projection.
    """

    def correlations(group: pd.DataFrame) -> pd.Series:
        return pd.Series(
            {
                "neurons": len(group),
                "r(vip, accuracy)": group["vip"].corr(group["accuracy"]),
                "r(mean_positive, accuracy)": group["mean_positive"].corr(group["accuracy"]),
            }
        )

    pooled = vip.groupby("source")[["vip", "mean_positive", "accuracy"]].apply(correlations).reset_index()
    pooled[["layer", "attribute"]] = "all"
    keys = ["source", "layer", "attribute"]
    each = vip.groupby(keys)[["vip", "mean_positive", "accuracy"]].apply(correlations).reset_index()
    table = pd.concat([pooled, each], ignore_index=True)
    table["neurons"] = table["neurons"].astype(int)
    return table[[*keys, "neurons", "r(vip, accuracy)", "r(mean_positive, accuracy)"]]


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: fractions as percentages with one decimal, r with three, missing as an en dash."""
    shown = frame.astype(object).copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values):
            percent = any(column.endswith(p) for p in _PERCENT)
            text = [f"{100 * v:.1f}" if percent else f"{v:.3f}" for v in values]
            shown[column] = [t if pd.notna(v) else "–" for t, v in zip(text, values, strict=True)]
        else:
            shown[column] = ["–" if pd.isna(v) else str(v) for v in values]
    shown.columns = [f"{c} (%)" if any(c.endswith(p) for p in _PERCENT) else str(c) for c in frame.columns]
    return shown


def _markdown_cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def write_table(frame: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.csv`` (raw values) and ``stem.md`` (a Markdown table, HTML-escaped so names stay text)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    frame.to_csv(csv, index=False)
    shown = _display(frame)
    lines = [
        "| " + " | ".join(_markdown_cell(c) for c in shown.columns) + " |",
        "|" + "---|" * len(shown.columns),
        *("| " + " | ".join(_markdown_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)),
    ]
    md.write_text("\n".join(lines) + "\n")
    return csv, md


def table_html(frame: pd.DataFrame) -> str:
    """An HTML table of ``frame`` with every cell escaped: attribute names are data, never markup."""
    shown = _display(frame)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in shown.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
