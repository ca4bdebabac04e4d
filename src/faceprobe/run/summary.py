"""What a finished run tells its user at once: the best layer per attribute, and everything to be wary of.

Printed by ``faceprobe run``/``probe`` at the end, so nobody has to open the tables to learn that a draw was
shortened, a probe could not run, or an attribute was left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from faceprobe.run.tables import read_table

__all__ = ["RunSummary", "failed_attributes", "summarise"]


@dataclass(frozen=True)
class RunSummary:
    """``best``: per model and attribute the layer whose whole-layer probe is best on validation."""

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
    data, config = manifest.get("data", {}), manifest.get("config", {})
    warnings = [
        f"{attribute}: draw shortened to {sizes[0]} train + {sizes[1]} val images (too few of a class)"
        for attribute, sizes in data.get("shortened", {}).items()
    ]
    warnings += [f"{attribute}: left out, {why}" for attribute, why in data.get("dropped", {}).items()]
    if data.get("skipped_images"):
        warnings.append(f"{len(data['skipped_images'])} images skipped as bad (listed in manifest.json)")
    nan = results[results["accuracy"].isna()]
    if len(nan):
        per = nan.groupby("attribute").size()
        listed = ", ".join(f"{a} ({n})" for a, n in per.items())
        warnings.append(f"{len(nan)} probe rows without an accuracy (see their note): {listed}")
    if config.get("data", {}).get("test", 0) == 0:
        warnings.append("no test split scored: best units are chosen and reported on validation")
    if not config.get("probe", {}).get("vip_study", 0):
        warnings.append("the VIP study (Fig. 5.9) was not run (probe.vip_study = 0)")
    if not config.get("ablation"):
        warnings.append("the ablation study (Table 5.4) was not run (no [ablation] table)")
    return RunSummary(_best_layers(results), tuple(warnings))


def _best_layers(results: pd.DataFrame) -> pd.DataFrame:
    val = results[(results["split"] == "val") & (results["representation"] == "layer")]
    val = val.dropna(subset=["accuracy"])
    if val.empty:
        return pd.DataFrame(columns=["model", "attribute", "layer", "depth", "accuracy", "n_eval"])
    best = val.loc[val.groupby(["model", "attribute"])["accuracy"].idxmax()]
    return best[["model", "attribute", "layer", "depth", "accuracy", "n_eval"]].reset_index(drop=True)
