"""The thesis's tables from result rows: best units vs the baseline (5.2), averages (5.3), ablation (5.4).

Units are chosen on the validation split and reported on the test split when the run has one, as the
thesis does: choosing and reporting on the same rows would flatter the best unit. The thesis reports means
over runs (each architecture trained from several seeds), so every table can be averaged over the seeds of
a variant (``over_seeds``), with the standard deviation over seeds beside each mean where a variant has
more than one. Tables are written as CSV (raw fractions, for scripts) and Markdown (percentages, for
reading).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CONTROL",
    "POOLED",
    "STD",
    "ablation_drops",
    "baseline_accuracy",
    "best_units",
    "representation_averages",
    "table_html",
    "vip_correlations",
    "vip_projections",
    "write_table",
]

#: The random-label attribute: a reference in every view, never part of an average.
CONTROL = "Control_Random"
#: Suffix of a column holding the standard deviation over seeds of the column it follows.
STD = " std"
#: The column of :func:`vip_correlations` holding the pooled r, which is not the thesis's statistic.
POOLED = "pooled r (not the thesis statistic)"
_KEY = ["source", "layer", "attribute", "representation", "unit"]
_REPRESENTATIONS = ("layer", "channels", "neurons", "channel", "neuron")
#: Columns holding fractions of 1 (and their spreads over seeds), shown as percentages.
_PERCENT = ("accuracy", "baseline", "gap", "drop")
#: What single-neuron accuracy is correlated with in the VIP study, and the name of each r column.
_MEASURES = {"vip": "r(vip, accuracy)", "mean_positive": "r(mean_positive, accuracy)"}
_SPLIT_ORDER = {"val": 0, "test": 1}


def baseline_accuracy(baseline: pd.DataFrame | None) -> pd.Series | None:
    """The multitask baseline per attribute, on the test split when it has one (like the probes)."""
    if baseline is None or baseline.empty:
        return None
    split = "test" if (baseline["split"] == "test").any() else "val"
    return baseline[baseline["split"] == split].groupby("attribute")["accuracy"].mean()


def _columns(representation: str) -> dict[str, str]:
    """Table 5.2's column names for one representation, read naturally ("best layer", not "layer layer")."""
    layer = "best layer" if representation == "layer" else f"{representation} layer"
    return {"layer": layer, "unit": f"{representation} unit", "accuracy": f"{representation} accuracy"}


def best_units(
    results: pd.DataFrame, baseline: pd.DataFrame | None = None, *, over_seeds: bool = False
) -> pd.DataFrame:
    """Per source, attribute and representation: the best layer (and unit) on val, its accuracy on test.

    Columns: source, variant (per seed only), attribute, then per representation present ``best layer`` and
    ``layer accuracy`` for the whole layer, ``REP layer`` and ``REP accuracy`` for the others, with
    ``REP unit`` for the single channel and neuron; ``split`` (where the accuracies were measured); with a
    baseline, ``baseline`` and ``gap``: the baseline minus the best whole-layer accuracy, by which rows are
    ordered (the attributes the network encodes closest to a supervised model first), as in thesis Table
    5.2. Best channels come from convolutional layers only: 1-D outputs (fc, embedding) have no channels.

    ``over_seeds``: one row per variant (``source`` is the variant) holding the mean over its seeds of each
    seed's best accuracy, as the thesis reports means over runs; layers and units list each seed's choice,
    most common first. Where a variant has several seeds, ``seeds`` counts them and ``REP accuracy std``
    is the standard deviation over seeds.
    """
    table = _best_per_seed(results)
    if over_seeds:
        texts = [c for c in table.columns if c.endswith((" layer", " unit"))]
        means = [c for c in table.columns if c.endswith(" accuracy")]
        others = {**dict.fromkeys(texts, _choices), "split": "first"}
        table = _mean_over_seeds(table, ["attribute"], means, others)
    ceiling = baseline_accuracy(baseline)
    if ceiling is not None and "layer accuracy" in table:
        table["baseline"] = table["attribute"].map(ceiling)
        table["gap"] = table["baseline"] - table["layer accuracy"]
        return table.sort_values(["source", "gap", "attribute"], na_position="last").reset_index(drop=True)
    return table.sort_values(["source", "attribute"]).reset_index(drop=True)


def _best_per_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Table 5.2 per source (each model, hence each seed), without the baseline."""
    scored = results.dropna(subset=["accuracy"])
    if "unit" not in scored:
        scored = scored.assign(unit=-1)
    if "variant" not in scored:  # each source its own variant
        scored = scored.assign(variant=scored["source"])
    val = scored[scored["split"] == "val"]
    if val.empty:
        return pd.DataFrame(columns=["source", "variant", "attribute", "split"])
    best = val.loc[val.groupby(["source", "attribute", "representation"])["accuracy"].idxmax()]
    test = scored[scored["split"] == "test"][[*_KEY, "accuracy"]]
    best = best[[*_KEY, "variant", "accuracy"]].rename(columns={"accuracy": "val_accuracy"})
    best = best.merge(test.rename(columns={"accuracy": "test_accuracy"}), on=_KEY, how="left")
    best["split"] = np.where(best["test_accuracy"].notna(), "test", "val")
    best["accuracy"] = best["test_accuracy"].fillna(best["val_accuracy"])
    wide = best.pivot_table(
        index=["source", "variant", "attribute"],
        columns="representation",
        values=["layer", "unit", "accuracy", "split"],
        aggfunc="first",
    )
    order = [r for r in _REPRESENTATIONS if r in set(best["representation"])]
    columns = {}
    for rep in order:
        names = _columns(rep)
        columns[names["layer"]] = wide[("layer", rep)]
        if rep in ("channel", "neuron"):
            columns[names["unit"]] = wide[("unit", rep)].astype("Int64")
        columns[names["accuracy"]] = wide[("accuracy", rep)].astype(float)
    table = pd.DataFrame(columns).reset_index()
    # a 1-D layer has no channel rows: take the split of whichever representation an attribute has
    table["split"] = wide[[("split", rep) for rep in order]].bfill(axis=1).iloc[:, 0].to_numpy()
    return table


def _choices(values: pd.Series) -> str | float:
    """The seeds' choices (of a layer or unit), most common first, joined by " / "; NaN when none chose."""
    counts = Counter(str(v) for v in values if pd.notna(v))
    return " / ".join(v for v, _ in counts.most_common()) if counts else np.nan


def _mean_over_seeds(
    per_seed: pd.DataFrame, keys: list[str], means: list[str], others: dict[str, str | Callable] | None = None
) -> pd.DataFrame:
    """Per variant and ``keys``: the mean over seeds (sources) of the ``means`` columns, and ``others``
    aggregated as given. ``source`` becomes the variant. Where some variant has several seeds, ``seeds``
    counts them and each mean is followed by its standard deviation over seeds (``COLUMN std``); with one
    seed per variant the table looks like the per-seed one."""
    groups = per_seed.groupby(["variant", *keys], sort=False, dropna=False)
    several = bool((groups["source"].nunique() > 1).any())
    spec: dict[str, tuple[str, str | Callable]] = {"seeds": ("source", "nunique")} if several else {}
    for column in per_seed.columns:
        if column in means:
            spec[column] = (column, "mean")
            if several:
                spec[column + STD] = (column, "std")
        elif others and column in others:
            spec[column] = (column, others[column])
    return groups.agg(**spec).reset_index().rename(columns={"variant": "source"})


def representation_averages(best: pd.DataFrame, *, over_seeds: bool = False) -> pd.DataFrame:
    """Mean best accuracy over attributes per source and representation (thesis Table 5.3), no control.

    ``best`` is :func:`best_units`' table. ``over_seeds`` takes the per-seed one and averages each seed's
    mean over the seeds of its variant (with ``seeds`` and ``accuracy std`` where a variant has several).
    Representations a source has no row for (no channels in a network of 1-D layers) are left out.
    """
    real = best[best["attribute"] != CONTROL]
    rows = [
        {
            "source": source,
            "variant": group["variant"].iloc[0] if "variant" in group else source,
            "representation": column.removesuffix(" accuracy"),
            "attributes": int(group[column].notna().sum()),
            "accuracy": group[column].mean(),
        }
        for source, group in real.groupby("source")
        for column in group.columns
        if column.endswith(" accuracy") and group[column].notna().any()
    ]
    table = pd.DataFrame(rows, columns=["source", "variant", "representation", "attributes", "accuracy"])
    if over_seeds:
        table = _mean_over_seeds(table, ["representation"], ["accuracy"], {"attributes": "max"})
    else:
        table = table.drop(columns="variant")
    if "baseline" in real:
        base = real.drop_duplicates("attribute")["baseline"]
        row = {"source": "multitask baseline", "representation": "baseline"}
        row |= {"attributes": int(base.notna().sum()), "accuracy": base.mean()}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return table.astype({c: "Int64" for c in ("seeds", "attributes") if c in table})


def ablation_drops(ablation: pd.DataFrame, *, over_seeds: bool = False) -> pd.DataFrame:
    """Mean accuracy drop of later layers' probes per ablated layer, fraction, representation and split
    (thesis Table 5.4): each ablated probe is compared with the unablated probe of its own split, so val
    and test drops are separate rows, never averaged together.

    Columns: source, ablated_layer, ablated_depth, fraction, representation, split, n_ablated, probes,
    unablated accuracy, ablated accuracy, drop. ``over_seeds``: one row set per variant, means over its
    seeds (with ``seeds`` and ``... std`` columns where a variant has several).
    """
    real = ablation[ablation["attribute"] != CONTROL]
    if "variant" not in real:  # each source its own variant
        real = real.assign(variant=real["source"])
    keys = ["ablated_layer", "ablated_depth", "fraction", "representation", "split"]
    table = (
        real.groupby(["source", "variant", *keys])
        .agg(
            n_ablated=("n_ablated", "max"),
            probes=("drop", "size"),
            **{"unablated accuracy": ("baseline_accuracy", "mean"), "ablated accuracy": ("accuracy", "mean")},
            drop=("drop", "mean"),
        )
        .reset_index()
    )
    if over_seeds:
        means = ["unablated accuracy", "ablated accuracy", "drop"]
        table = _mean_over_seeds(table, keys, means, {"n_ablated": "max", "probes": "sum"})
    else:
        table = table.drop(columns="variant")
    order = ["source", "ablated_depth", "fraction", "representation", "split"]
    table = table.sort_values(order, key=lambda c: c.map(_SPLIT_ORDER) if c.name == "split" else c)
    return table.reset_index(drop=True)


def _projection_r(vip: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per PLS projection (``keys``): its neurons and the Pearson r of their accuracy with each measure."""

    def correlations(group: pd.DataFrame) -> pd.Series:
        r = {name: group[m].corr(group["accuracy"]) for m, name in _MEASURES.items()}
        return pd.Series({"neurons": len(group), **r})

    columns = [*keys, "neurons", *_MEASURES.values()]
    if vip.empty:
        return pd.DataFrame(columns=columns)
    table = vip.groupby(keys, sort=False)[["vip", "mean_positive", "accuracy"]].apply(correlations)
    table = table.reset_index()
    table["neurons"] = table["neurons"].astype(int)
    return table[columns]


def vip_projections(vip: pd.DataFrame) -> pd.DataFrame:
    """One row per PLS projection (source, layer, attribute; Control_Random included, as a reference): its
    sampled neurons and the Pearson r of their single-neuron validation accuracy with VIP and with mean
    activation on positives. :func:`vip_correlations` averages these rs."""
    return _projection_r(vip, ["source", "layer", "attribute"])


def vip_correlations(vip: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """The thesis's Fig. 5.9 statistic (section 5.3): the mean over projections of per-projection Pearson r.

    A PLS projection is one (model, layer, attribute); its r is taken over its ~50 sampled neurons between
    single-neuron validation accuracy and VIP (thesis: 0.93 on average), and for contrast mean activation on
    positives (0.38). VIP scores of different projections are not comparable, so one r over all neurons
    pooled is not the thesis's statistic; it is kept, labelled, in the last column. Control_Random (random
    labels: no relevant neuron) is left out.

    One row per ``by`` value (``source``; ``variant`` pools the projections of a variant's seeds) and
    measure (vip, mean_positive): projections (those with a defined r), their neurons, mean r, std r (over
    projections) and :data:`POOLED`.
    """
    real = vip[vip["attribute"] != CONTROL]
    projections = _projection_r(real, list(dict.fromkeys([by, "source", "layer", "attribute"])))
    rows = []
    for label, group in real.groupby(by, sort=False):
        each = projections[projections[by] == label]
        for measure, name in _MEASURES.items():
            r = each[name].dropna()
            rows.append(
                {
                    "source": label,
                    "measure": measure,
                    "projections": len(r),
                    "neurons": int(each.loc[r.index, "neurons"].sum()),
                    "mean r": r.mean(),
                    "std r": r.std(),
                    POOLED: group[measure].corr(group["accuracy"]),
                }
            )
    columns = ["source", "measure", "projections", "neurons", "mean r", "std r", POOLED]
    return pd.DataFrame(rows, columns=columns)


def _is_percent(column: str) -> bool:
    return column.removesuffix(STD).endswith(_PERCENT)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: fractions as percentages with one decimal, r with three, missing as an en dash."""
    shown = frame.astype(object).copy()
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values):
            text = [f"{100 * v:.1f}" if _is_percent(column) else f"{v:.3f}" for v in values]
            shown[column] = [t if pd.notna(v) else "–" for t, v in zip(text, values, strict=True)]
        else:
            shown[column] = ["–" if pd.isna(v) else str(v) for v in values]
    shown.columns = [f"{c} (%)" if _is_percent(c) else str(c) for c in frame.columns]
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
