"""What a finished run tells its user at once: the best layer per attribute, and everything to be wary of.

Printed by ``faceprobe run``/``probe`` at the end, so nobody has to open the tables to learn that a draw was
shortened, a probe could not run, or an attribute was left out.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from faceprobe.run.tables import read_table

__all__ = ["RunSummary", "failed_attributes", "run_warnings", "summarise"]


@dataclass(frozen=True)
class RunSummary:
    """``best``: per model and attribute the layer whose whole-layer probe is best on validation (in its
    headline metric: accuracy, balanced accuracy or R^2, named in ``metric``)."""

    best: pd.DataFrame
    warnings: tuple[str, ...]


def failed_attributes(results: pd.DataFrame) -> dict[str, str]:
    """Attributes none of whose probes gave an accuracy, each with the reason its first probe gave."""
    failed = {}
    for attribute, rows in results.groupby("attribute", sort=True):
        if rows["accuracy"].isna().all():
            notes = [n for n in rows["note"] if isinstance(n, str) and n]
            failed[str(attribute)] = notes[0] if notes else "no probe could be fitted"
    return failed


def summarise(run_dir: str | Path) -> RunSummary:
    """The summary of the run in ``run_dir`` from its tables and manifest (nothing is recomputed)."""
    run_dir = Path(run_dir)
    results = read_table(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return RunSummary(_best_layers(results), tuple(run_warnings(results, manifest)))


def run_warnings(
    results: pd.DataFrame | None, manifest: dict | None, tables: Collection[str] | None = None
) -> list[str]:
    """Everything a reader of the run's numbers should know first: shortened draws, attributes left out,
    skipped images, probe rows without an accuracy, and studies (test split, VIP study, ablation) not run.

    The end-of-run summary prints them and the report shows them in one box. Either input may be missing
    (a report of a folder without manifest still lists the NaN rows); ``tables``, the names of the tables
    the run folder holds, says which studies ran where the configuration cannot (a report of a folder).
    """
    manifest = manifest or {}
    data, config = manifest.get("data") or {}, manifest.get("config") or {}
    warnings = [
        f"{attribute}: draw shortened to {sizes[0]} train + {sizes[1]} val images (too few of a class)"
        for attribute, sizes in (data.get("shortened") or {}).items()
    ]
    warnings += [f"{attribute}: left out, {why}" for attribute, why in (data.get("dropped") or {}).items()]
    if data.get("skipped_images"):
        warnings.append(f"{len(data['skipped_images'])} images skipped as bad (listed in manifest.json)")
    if results is not None:
        nan = results[results["accuracy"].isna()]
        if len(nan):
            per = nan.groupby("attribute").size()
            listed = ", ".join(f"{a} ({n})" for a, n in per.items())
            warnings.append(f"{len(nan)} probe rows without an accuracy (see their note): {listed}")
    scored_test = (results["split"] == "test").any() if results is not None else None
    if scored_test is None and config:
        scored_test = (config.get("data") or {}).get("test", 0) != 0
    if scored_test is False:
        warnings.append("no test split scored: best units are chosen and reported on validation")
    if tables is not None:
        ran = {"vip": "vip_study" in tables, "ablation": "ablation" in tables}
    elif config:
        ran = {
            "vip": bool((config.get("probe") or {}).get("vip_study", 0)),
            "ablation": bool(config.get("ablation")),
        }
    else:
        ran = {}
    if ran.get("vip") is False:
        warnings.append("the VIP study (Fig. 5.9) was not run (probe.vip_study = 0)")
    if ran.get("ablation") is False:
        warnings.append("the ablation study (Table 5.4) was not run (no [ablation] table)")
    return warnings


def _best_layers(results: pd.DataFrame) -> pd.DataFrame:
    val = results[(results["split"] == "val") & (results["representation"] == "layer")]
    if "metric" in val:  # the best layer by the headline metric: a continuous target's R^2, not its MAE
        val = val[val["metric"] != "mae"]
    val = val.dropna(subset=["accuracy"])
    if val.empty:
        return pd.DataFrame(columns=["model", "attribute", "layer", "depth", "accuracy", "n_eval", "metric"])
    best = val.loc[val.groupby(["model", "attribute"])["accuracy"].idxmax()]
    if "metric" not in best:
        best = best.assign(metric="accuracy")
    return best[["model", "attribute", "layer", "depth", "accuracy", "n_eval", "metric"]].reset_index(
        drop=True
    )
