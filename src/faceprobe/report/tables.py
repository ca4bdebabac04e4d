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

from faceprobe.controls import CONTROL, control_rows
from faceprobe.report.stats import (
    difference_interval,
    fisher_interval,
    mean_r_interval,
    too_few,
    wilson_interval,
)

__all__ = [
    "CONTROL",
    "HIGH",
    "LOW",
    "POOLED",
    "STD",
    "ablation_drops",
    "baseline_accuracy",
    "best_units",
    "representation_averages",
    "row_classes",
    "selectivity",
    "table_html",
    "vip_correlations",
    "vip_projections",
    "write_table",
]

#: Suffix of a column holding the standard deviation over seeds of the column it follows.
STD = " std"
#: Suffixes of the columns holding the 95% interval of the column they follow (Wilson for accuracies, Fisher
#: z for correlations); the page and Markdown show them as ``value ± half-width`` or ``value [low, high]``.
LOW, HIGH = " low", " high"
#: The column of :func:`vip_correlations` holding the pooled r, which is not the thesis's statistic.
POOLED = "pooled r (not the thesis statistic)"
_KEY = ["source", "layer", "attribute", "representation", "unit"]
_REPRESENTATIONS = ("layer", "channels", "neurons", "channel", "neuron")
#: Columns holding fractions of 1 (and their spreads over seeds), shown as percentages.
_PERCENT = ("accuracy", "accuracy min", "accuracy max", "baseline", "gap", "drop", "selectivity")
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
    ``REP unit`` for the single channel and neuron, and after each accuracy its 95% Wilson interval
    (``... low``, ``... high``); ``split`` (where the accuracies were measured), ``n_eval`` (the images of
    that split behind each accuracy, per model) and ``optimistic``: True where no test split was scored, so
    the units were chosen and reported on the same validation images, which flatters the winner. With a
    baseline, ``baseline`` and ``gap``: the baseline minus the best whole-layer accuracy, by which rows are
    ordered (the attributes the network encodes closest to a supervised model first), as in thesis Table
    5.2. Best channels come from convolutional layers only: 1-D outputs (fc, embedding) have no channels.

    ``over_seeds``: one row per variant (``source`` is the variant) holding the mean over its seeds of each
    seed's best accuracy, as the thesis reports means over runs; layers and units list each seed's choice,
    most common first. Where a variant has several seeds, ``seeds`` counts them and ``REP accuracy std``
    is the standard deviation over seeds; the interval of a mean takes the images of all its seeds.
    """
    table = _best_per_seed(results)
    table["_n"] = table["n_eval"]
    if over_seeds:
        texts = [c for c in table.columns if c.endswith((" layer", " unit"))]
        means = [c for c in table.columns if c.endswith(" accuracy")]
        others = {**dict.fromkeys(texts, _choices), "split": "first", "n_eval": "min", "_n": "sum"}
        table = _mean_over_seeds(table, ["attribute"], means, others)
    table = _with_intervals(table, [c for c in table.columns if c.endswith(" accuracy")], table.pop("_n"))
    table["n_eval"] = table["n_eval"].astype("Int64")
    table["optimistic"] = table["split"] == "val"
    ceiling = baseline_accuracy(baseline)
    if ceiling is not None and "layer accuracy" in table:
        table["baseline"] = table["attribute"].map(ceiling)
        table["gap"] = table["baseline"] - table["layer accuracy"]
        return table.sort_values(["source", "gap", "attribute"], na_position="last").reset_index(drop=True)
    return table.sort_values(["source", "attribute"]).reset_index(drop=True)


def _with_intervals(table: pd.DataFrame, columns: list[str], n: pd.Series) -> pd.DataFrame:
    """``table`` with the 95% Wilson interval of each accuracy column (measured on ``n`` images) after it
    (or after its ``std`` column)."""
    out = table.copy()
    for column in columns:
        low, high = wilson_interval(out[column].to_numpy(float), n.to_numpy(float))
        at = out.columns.get_loc(column + STD if column + STD in out else column) + 1
        out.insert(at, column + LOW, low)
        out.insert(at + 1, column + HIGH, high)
    return out


def _best_per_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Table 5.2 per source (each model, hence each seed), without the baseline."""
    scored = results.dropna(subset=["accuracy"])
    if "unit" not in scored:
        scored = scored.assign(unit=-1)
    if "variant" not in scored:  # each source its own variant
        scored = scored.assign(variant=scored["source"])
    val = scored[scored["split"] == "val"]
    if val.empty:
        return pd.DataFrame(columns=["source", "variant", "attribute", "split", "n_eval"])
    best = val.loc[val.groupby(["source", "attribute", "representation"])["accuracy"].idxmax()]
    test = scored[scored["split"] == "test"][[*_KEY, "accuracy", "n_eval"]]
    best = best[[*_KEY, "variant", "accuracy", "n_eval"]].rename(
        columns={"accuracy": "val_accuracy", "n_eval": "val_n"}
    )
    best = best.merge(
        test.rename(columns={"accuracy": "test_accuracy", "n_eval": "test_n"}), on=_KEY, how="left"
    )
    best["split"] = np.where(best["test_accuracy"].notna(), "test", "val")
    best["accuracy"] = best["test_accuracy"].fillna(best["val_accuracy"])
    best["n_eval"] = best["test_n"].where(best["test_accuracy"].notna(), best["val_n"])
    wide = best.pivot_table(
        index=["source", "variant", "attribute"],
        columns="representation",
        values=["layer", "unit", "accuracy", "split", "n_eval"],
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
    # every representation of an attribute is scored on the same images; the fewest if they differ
    table["n_eval"] = wide[[("n_eval", rep) for rep in order]].astype(float).min(axis=1).to_numpy()
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
    ``accuracy low``/``high``: the 95% Wilson interval of the mean, from the images of every attribute
    (and seed) in it; ``optimistic``: some of its accuracies were chosen and reported on validation.
    """
    real = best[~control_rows(best["attribute"])]
    has_n = "n_eval" in real
    rows = [
        {
            "source": source,
            "variant": group["variant"].iloc[0] if "variant" in group else source,
            "representation": column.removesuffix(" accuracy"),
            "attributes": int(group[column].notna().sum()),
            "accuracy": group[column].mean(),
            "_n": group.loc[group[column].notna(), "n_eval"].astype(float).sum() if has_n else np.nan,
            "optimistic": bool(group.get("optimistic", pd.Series(False)).any()),
        }
        for source, group in real.groupby("source")
        for column in group.columns
        if column.endswith(" accuracy") and group[column].notna().any()
    ]
    columns = ["source", "variant", "representation", "attributes", "accuracy", "_n", "optimistic"]
    table = pd.DataFrame(rows, columns=columns)
    if over_seeds:
        others = {"attributes": "max", "_n": "sum", "optimistic": "any"}
        table = _mean_over_seeds(table, ["representation"], ["accuracy"], others)
    else:
        table = table.drop(columns="variant")
    table = _with_intervals(table, ["accuracy"], table.pop("_n"))
    if "baseline" in real:
        base = real.drop_duplicates("attribute")["baseline"]
        row = {"source": "multitask baseline", "representation": "baseline"}
        row |= {"attributes": int(base.notna().sum()), "accuracy": base.mean(), "optimistic": False}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table["optimistic"] = table["optimistic"].astype(bool)
    return table.astype({c: "Int64" for c in ("seeds", "attributes") if c in table})


def ablation_drops(ablation: pd.DataFrame, *, over_seeds: bool = False) -> pd.DataFrame:
    """Mean accuracy drop of later layers' probes per ablated layer, fraction, representation and split
    (thesis Table 5.4): each ablated probe is compared with the unablated probe of its own split, so val
    and test drops are separate rows, never averaged together.

    Columns: source, ablated_layer, ablated_depth, fraction, representation, split, n_ablated, probes,
    unablated accuracy, ablated accuracy, drop. ``over_seeds``: one row set per variant, means over its
    seeds (with ``seeds`` and ``... std`` columns where a variant has several).
    """
    real = ablation[~control_rows(ablation["attribute"])]
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


def selectivity(
    results: pd.DataFrame, representations: tuple[str, ...] = ("layer",), split: str = "val"
) -> pd.DataFrame:
    """Per model, layer, attribute and representation: its accuracy less the random-label controls' at the
    same model, layer and representation (selectivity, after the control tasks of Hewitt and Liang 2019).

    A probe that fits noise well reaches high accuracy on anything; selectivity is what it finds beyond
    that. Columns: source, variant, layer, depth, attribute, representation, split, accuracy, n_train,
    n_eval, controls (how many), control accuracy (their mean), and where some layer has several controls
    ``control accuracy min``/``max`` (their spread); selectivity with its 95% interval (Newcombe's, the
    attribute's and the controls' images taken as independent), and ``same draw sizes``: False where the
    attribute's draw was shortened, so it is compared with controls fitted and scored on more images.
    Controls are left out as rows; an attribute's NaN accuracy gives a NaN selectivity.
    """
    rows = results[(results["split"] == split) & results["representation"].isin(representations)]
    if "source" not in rows:
        rows = rows.assign(source=rows["model"].astype(str))
    if "variant" not in rows:
        rows = rows.assign(variant=rows["source"])
    keys = ["source", "layer", "depth", "representation", "split"]
    control = control_rows(rows["attribute"])
    controls = (
        rows[control]
        .dropna(subset=["accuracy"])
        .groupby(keys, sort=False)
        .agg(
            controls=("attribute", "nunique"),
            **{
                "control accuracy": ("accuracy", "mean"),
                "control accuracy min": ("accuracy", "min"),
                "control accuracy max": ("accuracy", "max"),
            },
            _n=("n_eval", "sum"),
            _train_min=("n_train", "min"),
            _train_max=("n_train", "max"),
            _eval_min=("n_eval", "min"),
            _eval_max=("n_eval", "max"),
        )
        .reset_index()
    )
    columns = [*keys[:3], "variant", "attribute", *keys[3:], "accuracy", "n_train", "n_eval"]
    table = rows.loc[~control, columns].astype({"source": str, "variant": str, "attribute": str})
    table = table.merge(controls.astype({"source": str}), on=keys, how="left")
    table["selectivity"] = table["accuracy"] - table["control accuracy"]
    low, high = difference_interval(
        table["accuracy"], table["n_eval"], table["control accuracy"], table["_n"]
    )
    table["selectivity" + LOW], table["selectivity" + HIGH] = low, high
    table["same draw sizes"] = (
        table["n_train"].eq(table["_train_min"])
        & table["n_train"].eq(table["_train_max"])
        & table["n_eval"].eq(table["_eval_min"])
        & table["n_eval"].eq(table["_eval_max"])
    ).astype(bool)
    table = table.drop(columns=[c for c in table.columns if c.startswith("_")])
    table = table.astype({"controls": "Int64"})
    if not (table["controls"] > 1).any():  # one control: no spread to show
        table = table.drop(columns=["control accuracy min", "control accuracy max"])
    order = ["source", "depth", "attribute", "representation"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def _projection_r(vip: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per PLS projection (``keys``): its neurons and the Pearson r of their accuracy with each measure, each
    r followed by its 95% Fisher z interval over that many neurons."""
    columns = [*keys, "neurons", *(n + s for n in _MEASURES.values() for s in ("", LOW, HIGH))]
    if vip.empty:
        return pd.DataFrame(columns=columns)
    neurons = vip.groupby(keys, sort=False).size()
    table = neurons.rename("neurons").to_frame()
    for measure, name in _MEASURES.items():
        table[name] = _grouped_pearson(vip, keys, measure, "accuracy").reindex(neurons.index)
        table[name + LOW], table[name + HIGH] = fisher_interval(table[name], table["neurons"])
    return table.reset_index()[columns]


def _grouped_pearson(frame: pd.DataFrame, keys: list[str], x: str, y: str) -> pd.Series:
    """Pearson r of ``x`` with ``y`` within each group of ``keys``, over the rows where both are known, as
    :meth:`pandas.Series.corr` gives it (NaN under two pairs or without spread), in one pass over the frame.
    """
    pairs = frame.loc[frame[x].notna() & frame[y].notna(), [*keys, x, y]]
    groups = pairs.groupby(keys, sort=False)
    dx = pairs[x] - groups[x].transform("mean")
    dy = pairs[y] - groups[y].transform("mean")
    sums = pd.DataFrame({"xy": dx * dy, "xx": dx * dx, "yy": dy * dy}).groupby(
        [pairs[k] for k in keys], sort=False
    )
    totals, count = sums.sum(), sums.size()
    spread = totals["xx"] * totals["yy"]
    r = totals["xy"] / np.sqrt(spread.where(spread > 0))
    return r.where(count >= 2).clip(-1.0, 1.0)


def vip_projections(vip: pd.DataFrame) -> pd.DataFrame:
    """One row per PLS projection (source, layer, attribute; Control_Random included, as a reference),
    ordered by depth: its sampled neurons and the Pearson r of their single-neuron validation accuracy with
    VIP and with mean activation on positives, each with its 95% interval (Fisher z over the neurons).
    :func:`vip_correlations` averages these rs."""
    keys = ["source", "depth", "layer", "attribute"] if "depth" in vip else ["source", "layer", "attribute"]
    table = _projection_r(vip, keys)
    return table.sort_values(keys[:2], kind="stable").reset_index(drop=True)


def vip_correlations(vip: pd.DataFrame, by: str = "source") -> pd.DataFrame:
    """The thesis's Fig. 5.9 statistic (section 5.3): the mean over projections of per-projection Pearson r.

    A PLS projection is one (model, layer, attribute); its r is taken over its ~50 sampled neurons between
    single-neuron validation accuracy and VIP (thesis: 0.93 on average), and for contrast mean activation on
    positives (0.38). VIP scores of different projections are not comparable, so one r over all neurons
    pooled is not the thesis's statistic; it is kept, labelled, in the last column. Control_Random (random
    labels: no relevant neuron) is left out.

    One row per ``by`` value (``source``; ``variant`` pools the projections of a variant's seeds) and
    measure (vip, mean_positive): projections (those with a defined r), their neurons, mean r with its 95%
    interval (``mean r low``/``high``: from the spread of the projections' Fisher z, see
    :func:`~faceprobe.report.stats.mean_r_interval`), std r (over projections) and :data:`POOLED`.
    """
    real = vip[~control_rows(vip["attribute"])]
    projections = _projection_r(real, list(dict.fromkeys([by, "source", "layer", "attribute"])))
    rows = []
    for label, group in real.groupby(by, sort=False):
        each = projections[projections[by] == label]
        for measure, name in _MEASURES.items():
            r = each[name].dropna()
            low, high = mean_r_interval(r, each.loc[r.index, "neurons"])
            rows.append(
                {
                    "source": label,
                    "measure": measure,
                    "projections": len(r),
                    "neurons": int(each.loc[r.index, "neurons"].sum()),
                    "mean r": r.mean(),
                    "mean r" + LOW: low,
                    "mean r" + HIGH: high,
                    "std r": r.std(),
                    POOLED: group[measure].corr(group["accuracy"]),
                }
            )
    columns = ["source", "measure", "projections", "neurons", "mean r", "mean r" + LOW, "mean r" + HIGH]
    return pd.DataFrame(rows, columns=[*columns, "std r", POOLED])


def _is_percent(column: str) -> bool:
    return column.removesuffix(STD).endswith(_PERCENT)


def _intervals(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Columns with a 95% interval beside them: column -> (its low column, its high column)."""
    return {c: (c + LOW, c + HIGH) for c in frame.columns if c + LOW in frame and c + HIGH in frame}


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text: fractions as percentages with one decimal, r with three, missing as an en dash; an
    interval beside a column joins it, as ``± half-width`` for accuracies (the Wilson interval is nearly
    symmetric away from 0 and 1) and ``[low, high]`` for r."""
    intervals = _intervals(frame)
    hidden = {c for pair in intervals.values() for c in pair}
    shown = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        if column in hidden:
            continue
        values = frame[column]
        percent = _is_percent(column)
        name = f"{column} (%)" if percent else str(column)
        if column in intervals:
            low, high = (frame[c].to_numpy(float) for c in intervals[column])
            text = [
                _with_interval(v, lo, hi, percent)
                for v, lo, hi in zip(values.to_numpy(float), low, high, strict=True)
            ]
            name = f"{column} (%, ± 95% CI)" if percent else f"{column} [95% CI]"
        elif pd.api.types.is_bool_dtype(values):
            text = ["yes" if v else "no" for v in values]
        elif pd.api.types.is_float_dtype(values):
            text = [f"{100 * v:.1f}" if percent else f"{v:.3f}" for v in values]
            text = [t if pd.notna(v) else "–" for t, v in zip(text, values, strict=True)]
        else:
            text = ["–" if pd.isna(v) else str(v) for v in values]
        shown[name] = text
    return shown


def _with_interval(value: float, low: float, high: float, percent: bool) -> str:
    if np.isnan(value):
        return "–"
    if percent:
        return f"{100 * value:.1f}" + (f" ± {50 * (high - low):.1f}" if not np.isnan(low) else "")
    return f"{value:.3f}" + (f" [{low:.3f}, {high:.3f}]" if not np.isnan(low) else "")


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


def table_html(frame: pd.DataFrame, classes: list[str] | None = None) -> str:
    """An HTML table of ``frame`` with every cell escaped: attribute names are data, never markup.

    Numeric cells carry their raw value (``data-v``) so the page's sorting orders them as numbers;
    ``classes`` gives each row a CSS class (:func:`row_classes`: greyed, marked optimistic).
    """
    shown = _display(frame)
    numeric = {
        name: pd.to_numeric(frame[column], errors="coerce").astype(float).to_numpy()
        for name, column in zip(shown.columns, _shown_columns(frame), strict=True)
        if pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
    }
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    rows = []
    for i, row in enumerate(shown.itertuples(index=False)):
        cells = []
        for name, text in zip(shown.columns, row, strict=True):
            value = numeric[name][i] if name in numeric else np.nan
            sort = f' data-v="{float(value)!r}"' if np.isfinite(value) else ""
            cells.append(f"<td{sort}>{html.escape(text)}</td>")
        klass = f' class="{classes[i]}"' if classes and classes[i] else ""
        rows.append(f"<tr{klass}>{''.join(cells)}</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _shown_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that :func:`_display` keeps (interval bounds join their column)."""
    hidden = {c for pair in _intervals(frame).values() for c in pair}
    return [c for c in frame.columns if c not in hidden]


def row_classes(frame: pd.DataFrame) -> list[str]:
    """Per row: ``few`` where its accuracies rest on too few images to read a difference from, and
    ``optimistic`` where they were chosen and reported on the same split."""
    few = too_few(frame["n_eval"].astype(float)) if "n_eval" in frame else np.zeros(len(frame), bool)
    hopeful = frame["optimistic"].to_numpy(bool) if "optimistic" in frame else np.zeros(len(frame), bool)
    return [
        " ".join(name for name, on in (("few", f), ("optimistic", o)) if on)
        for f, o in zip(few, hopeful, strict=True)
    ]
