"""Reading a run folder for the report: whichever result tables exist, the manifest, and source labels.

A report never recomputes results: it reads the tables a run wrote. Any table may be absent (a run that
skipped a study), so a run is the tables it has plus the list of those it lacks, and the page says which.
Columns newer than a run folder are filled in as the run that wrote it meant them (``variant`` from the
model, ablation ``split`` = val), so older runs still make a report.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.errors import FaceprobeError
from faceprobe.results import STABLE_COLUMNS, TABLES

__all__ = ["Run", "combine_runs", "load_run", "variant_of", "with_baseline"]

#: Columns older runs lack, filled in on reading: ``variant`` from the model, ablation ``split`` = val.
_BACKFILLED = {"vip_study": ("variant",), "ablation": ("variant", "split")}
#: Columns a table must have: all of its columns (less the backfilled ones), except results where only the
#: stable ones are promised.
_REQUIRED = {
    **{
        name: tuple(c for c in columns if c not in _BACKFILLED.get(name, ()))
        for name, columns in TABLES.items()
    },
    "results": STABLE_COLUMNS,
}
_SEED = re.compile(r"/s\d+$")


@dataclass
class Run:
    """One run (or several combined): tables by name (``results``, ``vip_study``, ...) and manifests by run.

    Every table with a ``model`` column gets a ``source`` column naming the curve it belongs to: the model
    for one run, ``run: model`` when runs are compared; its ``variant`` column (the model less its seed)
    labels the views averaged over seeds, likewise ``run: variant`` when runs are compared.
    """

    name: str
    tables: dict[str, pd.DataFrame]
    missing: list[str]
    manifests: dict[str, dict] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` (a key of :data:`faceprobe.results.TABLES`), or None when the run lacks it."""
        return self.tables.get(name)


def load_run(path: str | Path) -> Run:
    """Read every table of the run folder ``path`` that exists, and its manifest.json if present."""
    path = Path(path)
    if not path.is_dir():
        raise FaceprobeError(f"{path} is not a folder; give the run folder that holds results.parquet")
    tables, missing = {}, []
    for name in TABLES:
        file = path / f"{name}.parquet"
        if not file.exists():
            missing.append(name)
            continue
        try:
            frame = pd.read_parquet(file)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise FaceprobeError(
                f"{file} cannot be read as Parquet ({type(err).__name__}: {err}); rerun the study that "
                "writes it or delete it"
            ) from None
        lacking = [c for c in _REQUIRED.get(name, ()) if c not in frame]
        if lacking:
            raise FaceprobeError(f"{file} lacks column(s) {', '.join(lacking)}; rewrite it with faceprobe")
        tables[name] = _backfill(name, frame)
    if not tables:
        raise FaceprobeError(
            f"{path} holds none of {', '.join(f'{t}.parquet' for t in TABLES)}; give a run folder written "
            "by faceprobe (e.g. faceprobe demo --out DIR)"
        )
    manifests = {}
    manifest = path / "manifest.json"
    if manifest.exists():
        try:
            manifests[path.name] = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise FaceprobeError(f"{manifest} is not valid JSON ({err}); fix or delete it") from None
    return Run(path.name, tables, missing, manifests, [path.name])


def variant_of(model: pd.Series) -> pd.Series:
    """The variant of each model: its id less a trailing ``/sSEED`` (a model without one is its own)."""
    return model.astype(str).str.replace(_SEED, "", regex=True)


def _backfill(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Columns newer than the run folder, as its writer meant them, and the ``source`` label."""
    if name == "results":  # columns newer than the stable set: absent means unknown
        frame = frame.assign(**{c: "" for c in ("architecture", "weights", "kind") if c not in frame})
        if "metric" not in frame:  # written before other kinds of targets: accuracies only
            frame = frame.assign(metric="accuracy")
        if "chance" not in frame:
            frame = frame.assign(chance=np.where(frame["metric"] == "accuracy", 0.5, np.nan))
    if name == "vip_study" and "metric" not in frame:
        frame = frame.assign(metric="accuracy")
    if name == "ablation" and "split" not in frame:  # older runs ablated on the validation split only
        frame = frame.assign(split="val")
    if "model" in frame:
        variant = variant_of(frame["model"])
        if "variant" in frame:  # rows written without one carry ""
            given = frame["variant"].astype("string").fillna("")
            variant = variant.where(given == "", given.astype(str))
        frame = frame.assign(source=frame["model"].astype(str), variant=variant)
    return frame


def with_baseline(run: Run, baseline: pd.DataFrame) -> Run:
    """A loaded ``run`` with ``baseline`` in place of its own baseline table (or added where it had none)."""
    missing = [name for name in run.missing if name != "baseline"]
    return replace(run, tables={**run.tables, "baseline": baseline}, missing=missing)


def combine_runs(runs: list[Run]) -> Run:
    """Runs as one, for overlaying: sources become ``run: model`` (variants ``run: variant``), tables gain a
    ``run`` column."""
    names = _unique([run.name for run in runs])
    tables: dict[str, list[pd.DataFrame]] = {}
    for name, run in zip(names, runs, strict=True):
        for table, frame in run.tables.items():
            frame = frame.assign(run=name)
            for label in ("source", "variant"):
                if label in frame:
                    frame[label] = name + ": " + frame[label]
            tables.setdefault(table, []).append(frame)
    missing = [
        f"{table} ({', '.join(n for n, r in zip(names, runs, strict=True) if table in r.missing)})"
        for table in TABLES
        if any(table in run.missing for run in runs)
    ]
    manifests = {
        name: manifest for name, run in zip(names, runs, strict=True) for manifest in run.manifests.values()
    }
    combined = {t: pd.concat(frames, ignore_index=True) for t, frames in tables.items()}
    return Run(" vs ".join(names), combined, missing, manifests, names)


def _unique(names: list[str]) -> list[str]:
    """Run names made distinct (two runs may share a folder name): the second ``a`` becomes ``a#2``."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out
