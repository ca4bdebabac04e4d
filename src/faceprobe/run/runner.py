"""Runs a study: plan the work units, run the missing ones (locally or on Dask), keep every result.

Layout of a run folder::

    RUN/config.toml            the configuration, as given
    RUN/manifest.json          config, versions, git revision, models, data counts, skipped images
    RUN/draws.parquet          every draw's image ids (attribute, split, image_id)
    RUN/results.parquet/       one Parquet part per finished work unit (pandas reads the folder as one table)
    RUN/vip_study.parquet/     likewise
    RUN/ablation.parquet/      likewise
    RUN/units/UNIT.done        written last by a unit, after its parts: the unit is finished
    RUN/log.jsonl              one line per unit started and finished

Resume lives in the plan: a unit with a ``.done`` marker is never run again, and every write is atomic
(a temporary file renamed into place), so a run killed at any point and started again finishes the missing
units only and gives the same tables. A unit is (model, group of layers) or (model, ablated layer); the
draws are computed once, before any unit, and read by every unit, so units on different machines agree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faceprobe.atomic import atomic_write_text
from faceprobe.errors import FaceprobeError
from faceprobe.results import to_frame, write_results
from faceprobe.run.config import CONTROL, RunConfig, parse_config
from faceprobe.run.work import Draws, ablation_rows, probe_rows

__all__ = ["RunStatus", "Unit", "plan_units", "run_status", "run_study"]

TABLES = ("results", "vip_study", "ablation")


@dataclass(frozen=True)
class Unit:
    """One work unit: which model, and either a group of layers to probe or a layer to ablate."""

    id: str
    model: dict[str, Any]  # architecture, weights, seed, name, input_size, layers
    layers: tuple[str, ...]
    ablated: str | None = None


# --- sources: datasets and models, through the library's loaders -------------------------------------------


def _dataset(config: RunConfig) -> Any:
    from faceprobe.data.registry import load_dataset

    return load_dataset(config.data.spec, skip_bad_images=config.data.skip_bad_images)


def _model(model: dict[str, Any]) -> Any:
    from faceprobe.models import load_model
    from faceprobe.models.preprocessing import parse_size

    return load_model(
        model["architecture"],
        model["weights"],
        seed=model["seed"],
        input_size=parse_size(model.get("input_size"), "input_size"),
        crop=model.get("crop"),
        mean=model.get("mean"),
        std=model.get("std"),
        bgr=model.get("bgr"),
        strict=model.get("strict", True),
    )


def _layer_infos(loaded: Any, spec: str) -> list:
    import torch

    from faceprobe.extract.catalogue import catalogue, select_layers

    h, w = loaded.preprocessing.input_size
    return select_layers(catalogue(loaded.module, torch.zeros(2, 3, h, w)), spec)


# --- the draws ---------------------------------------------------------------------------------------------


def make_draws(dataset: Any, config: RunConfig) -> tuple[Draws, Any]:
    """The protocol's draws for this run, with Control_Random (seeded random labels) added."""
    from faceprobe.data.sampling import sample_protocol

    data = config.data
    labels = dataset.attributes
    if labels is None:
        raise FaceprobeError(f"{data.spec}: the dataset has no attribute labels to probe")
    labels = labels.copy()
    if CONTROL not in labels:
        rng = np.random.default_rng([data.seed, 7])
        labels[CONTROL] = rng.integers(0, 2, len(labels)).astype(np.int8)
    wanted = list(labels.columns if data.attributes == "all" else data.attributes)
    if CONTROL not in wanted:
        wanted.append(CONTROL)
    n_test = None if data.test < 0 else data.test
    labelled = dataclasses.replace(dataset, attributes=labels)
    protocol = sample_protocol(
        labelled, wanted, n_train=data.train, n_val=data.val, n_test=n_test, seed=data.seed
    )
    return Draws.from_protocol(protocol, labels[wanted]), protocol


# --- planning ----------------------------------------------------------------------------------------------


def model_entries(config: RunConfig) -> list[dict[str, Any]]:
    entries = []
    for m in config.models:
        for weights in m.weights:
            for seed in m.seeds:
                origin = weights.split(":", 1)[0]
                entries.append(
                    {
                        "architecture": m.architecture,
                        "weights": weights,
                        "seed": seed,
                        "name": f"{m.architecture}/{origin}/s{seed}",
                        "input_size": m.input_size,
                        "crop": m.crop,
                        "mean": m.mean,
                        "std": m.std,
                        "bgr": m.bgr,
                        "strict": m.strict,
                        "layers": m.layers,
                    }
                )
    return entries


def plan_units(config: RunConfig, layer_names: Callable[[dict[str, Any]], list] | None = None) -> list[Unit]:
    """Every unit of the study (finished or not), in a stable order."""
    units = []
    for entry in model_entries(config):
        infos = layer_names(entry) if layer_names else _layer_infos(_model(entry), entry["layers"])
        names = [info.name for info in infos]
        slug = entry["name"].replace("/", "-")
        size = config.run.layers_per_unit
        for g in range(0, len(names), size):
            units.append(Unit(f"{slug}__layers{g:03d}", entry, tuple(names[g : g + size])))
        if config.ablation:
            for depth in config.ablation.depths:
                if depth < len(names) - 1:  # something must come after the ablated layer
                    units.append(
                        Unit(f"{slug}__ablate{depth:03d}", entry, tuple(names[depth + 1 :]), names[depth])
                    )
    return units


# --- one unit ----------------------------------------------------------------------------------------------


def execute_unit(run_dir: str | Path, unit: Unit, later: Sequence[Unit] = ()) -> str:
    """Run one unit and write its parts, then its done marker; returns the unit id. Safe to rerun.

    ``later`` are units that will run after this one and not at the same time (the local executor). When
    this unit streams its layers through the activation store, the store-bound layers of the later probe
    units of the same model are extracted in the same forward pass, so a network cut into groups of
    layers is still run once over the images; those units then find their layers stored.
    """
    run_dir = Path(run_dir)
    done = run_dir / "units" / f"{unit.id}.done"
    if done.exists():
        return unit.id
    config = parse_config(json.loads((run_dir / "manifest.json").read_text())["config"], str(run_dir))
    _log(run_dir, {"event": "start", "unit": unit.id})
    dataset = _dataset(config)
    draws = Draws(
        pd.read_parquet(run_dir / "draws.parquet"),
        pd.read_parquet(run_dir / "labels.parquet").set_index("image_id"),
    )
    images = draws.images()
    loaded = _model(unit.model)
    infos = {info.name: info for info in _layer_infos(loaded, unit.model["layers"])}
    transform = loaded.preprocessing.transform()
    device = _device(config.run.device)
    probe = config.probe.__dict__
    model_keys = {
        "model": unit.model["name"],
        "architecture": unit.model["architecture"],
        "weights": unit.model["weights"],
        "seed": unit.model["seed"],
    }
    if unit.ablated and config.ablation is not None:
        attributes = (
            draws.attributes if config.ablation.attributes == "all" else list(config.ablation.attributes)
        )
        layers = [infos[unit.ablated], *(infos[n] for n in unit.layers if n in infos)]
        rows = ablation_rows(
            loaded.module,
            transform,
            dataset,
            draws,
            layers[0],
            layers[1:],
            config.ablation.fractions,
            attributes,
            probe,
            config.run.batch_size,
            device,
            precision=config.run.precision,
            store=_store_for(run_dir, config, loaded, images, layers),
            store_dtype=np.dtype(config.run.store_dtype),
        )
        _write_part(
            run_dir,
            "ablation",
            unit.id,
            to_frame([{"model": unit.model["name"], **r} for r in rows], "ablation"),
        )
    else:
        layers = [infos[n] for n in unit.layers]
        store = _store_for(run_dir, config, loaded, images, layers)
        ahead = [
            [infos[n] for n in other.layers]
            for other in (later if store is not None else ())
            if other.model == unit.model and not other.ablated
        ]
        results, vip = probe_rows(
            loaded.module,
            transform,
            dataset,
            draws,
            layers,
            probe,
            config.run.batch_size,
            device,
            seed=config.data.seed,
            store=store,
            store_dtype=np.dtype(config.run.store_dtype),
            extract_also=[info for group in ahead if _outgrows(config, len(images), group) for info in group],
            precision=config.run.precision,
        )
        _write_part(run_dir, "results", unit.id, to_frame([{**model_keys, **r} for r in results]))
        if vip:
            _write_part(
                run_dir,
                "vip_study",
                unit.id,
                to_frame([{"model": unit.model["name"], **r} for r in vip], "vip_study"),
            )
    atomic_write_text(done, time.strftime("%Y-%m-%dT%H:%M:%S"))
    _log(run_dir, {"event": "finish", "unit": unit.id})
    return unit.id


def _store_for(run_dir: Path, config: RunConfig, loaded: Any, images: list[str], layers: Sequence) -> Any:
    """The activation store for a unit whose layers outgrow ``run.memory_gb`` in RAM, else None.

    The store lives inside the run folder (a config never writes outside it) and is keyed by the network's
    weights digest, its preprocessing and the images, so a rerun, or another unit of the same model, reads
    the batches already extracted instead of recomputing them.
    """
    from faceprobe.extract.store import ActivationStore, store_key

    if not _outgrows(config, len(images), layers):
        return None
    root = (run_dir / config.run.store).resolve()
    if not root.is_relative_to(run_dir.resolve()):
        raise FaceprobeError(f"{root}: run.store must stay inside the run folder {run_dir}")
    key = store_key(loaded.architecture, loaded.digest, loaded.preprocessing.to_dict(), images)
    return ActivationStore.open(root, key, batch_size=config.run.batch_size)


def _outgrows(config: RunConfig, n_images: int, layers: Sequence) -> bool:
    """Whether a unit's layers, held as float32 for ``n_images`` images, exceed ``run.memory_gb``."""
    return n_images * sum(info.features for info in layers) * 4 > config.run.memory_gb * 2**30


def _device(name: str) -> Any:
    from faceprobe.devices import resolve_device

    return resolve_device(name)


# --- the whole run -----------------------------------------------------------------------------------------


def run_study(
    config: RunConfig,
    run_dir: str | Path,
    executor: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[str, int | None], Callable[[int], None]] | None = None,
) -> RunStatus:
    """Run (or resume) the study into ``run_dir``; returns the status once every unit is finished."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    units = plan_units(config)  # first: a bad layer name or checkpoint fails before the run folder is written
    _prepare(config, run_dir)
    (run_dir / "units").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "units" / "plan.json", json.dumps([u.__dict__ for u in units], indent=1))
    todo = [u for u in units if not (run_dir / "units" / f"{u.id}.done").exists()]
    advance = progress("work units", len(units)) if progress else (lambda k: None)
    advance(len(units) - len(todo))
    executor = executor or config.run.executor
    if executor == "local":
        for k, unit in enumerate(todo):
            execute_unit(run_dir, unit, later=todo[k + 1 :])
            advance(1)
    else:
        _run_dask(
            run_dir,
            todo,
            scheduler if scheduler is not None else config.run.scheduler,
            workers or config.run.workers,
            advance,
        )
    return run_status(run_dir)


def _run_dask(run_dir: Path, units: Sequence[Unit], scheduler: str, workers: int, advance: Callable) -> None:
    """Each unit is one Dask task; a task whose worker dies is retried on another (``retries``)."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    with Client(scheduler or cluster) as client:
        futures = [
            client.submit(execute_unit, str(run_dir), unit, key=unit.id, retries=3, pure=False)
            for unit in units
        ]
        for future in as_completed(futures):
            future.result()
            advance(1)
    if cluster is not None:
        cluster.close()


def _prepare(config: RunConfig, run_dir: Path) -> None:
    """Write the manifest and the draws once; a resumed run must have the same configuration."""
    manifest_path = run_dir / "manifest.json"
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())["config"]
        if previous != json.loads(json.dumps(config.to_dict())):
            raise FaceprobeError(
                f"{run_dir} holds a run with another configuration; use a new folder, or the same config "
                "to resume"
            )
        return
    dataset = _dataset(config)
    draws, protocol = make_draws(dataset, config)
    write_results(draws.table, run_dir / "draws.parquet")
    write_results(draws.labels.rename_axis("image_id").reset_index(), run_dir / "labels.parquet")
    manifest = {
        "faceprobe_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": config.to_dict(),
        "models": model_entries(config),
        "data": {
            "spec": config.data.spec,
            "kind": getattr(dataset, "kind", ""),
            "attributes": draws.attributes,
            "n_train": config.data.train,
            "n_val": config.data.val,
            "n_test": int((draws.table["split"] == "test").sum()),
            "n_images": len(draws.images()),
            "shortened": {a: list(sizes) for a, sizes in protocol.shortened.items()},
            "skipped_images": [list(b) for b in (*dataset.skipped, *protocol.skipped)],
        },
        "versions": _versions(),
        "git_revision": _git_revision(),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))


# --- status ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    total: int
    finished: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not self.pending


def run_status(run_dir: str | Path) -> RunStatus:
    """Which units of a run are finished and which are left."""
    run_dir = Path(run_dir)
    plan = run_dir / "units" / "plan.json"
    if not plan.exists():
        raise FaceprobeError(
            f"{run_dir}: not a faceprobe run folder (no units/plan.json); start it with faceprobe run"
        )
    ids = [u["id"] for u in json.loads(plan.read_text())]
    finished = tuple(i for i in ids if (run_dir / "units" / f"{i}.done").exists())
    return RunStatus(run_dir, len(ids), finished, tuple(i for i in ids if i not in finished))


def read_table(run_dir: str | Path, name: str = "results") -> pd.DataFrame:
    """A run's table as one DataFrame, rows in a stable order (empty with the right columns when absent)."""
    path = Path(run_dir) / f"{name}.parquet"
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        return to_frame([], name) if name in TABLES else pd.DataFrame()
    frame = pd.read_parquet(path)
    keys = [
        c
        for c in (
            "model",
            "depth",
            "ablated_depth",
            "fraction",
            "attribute",
            "representation",
            "unit",
            "split",
            "neuron",
        )
        if c in frame
    ]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


# --- small helpers -----------------------------------------------------------------------------------------


def _write_part(run_dir: Path, table: str, unit_id: str, frame: pd.DataFrame) -> None:
    folder = run_dir / f"{table}.parquet"
    folder.mkdir(exist_ok=True)
    write_results(frame, folder / f"{unit_id}.parquet")


def _log(run_dir: Path, event: dict[str, Any]) -> None:
    """Append one JSON line in a single write, so concurrent workers and a kill never tear a line."""
    line = (json.dumps({"time": time.time(), "pid": os.getpid(), **event}) + "\n").encode()
    fd = os.open(run_dir / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _version() -> str:
    from faceprobe import __version__

    return __version__


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "platform": platform.platform(),
    }


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""
