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
import difflib
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

from faceprobe.allocator import reuse_freed_buffers
from faceprobe.atomic import atomic_write_text, writing
from faceprobe.controls import control_names, is_control, with_controls
from faceprobe.errors import FaceprobeError
from faceprobe.extract import LayerInfo
from faceprobe.extract.catalogue import select_layers
from faceprobe.extract.folding import folded_batchnorms
from faceprobe.extract.pieces import clean_cuts
from faceprobe.results import read_baseline, to_frame, write_results
from faceprobe.run.config import RESUMABLE, RunConfig, parse_config
from faceprobe.run.cost import UnitCost, calibrate, check_budgets, disk_budget, unit_costs
from faceprobe.run.entries import ModelEntry, model_entries
from faceprobe.run.folder import RunStatus, reclaim_held, run_folder, run_status
from faceprobe.run.lock import hold
from faceprobe.run.summary import failed_attributes
from faceprobe.run.tables import read_table
from faceprobe.run.work import Ablation, Draws, Forward, Placement, Storage, ablation_rows, probe_rows
from faceprobe.studies.layerwise import has_channels

__all__ = ["Unit", "plan_units", "run_study", "study_costs", "study_settings"]


@dataclass(frozen=True)
class Unit:
    """One work unit: which model, and either a group of layers to probe or a layer to ablate.

    An ablation unit comes ``after`` its model's probe units: it compares with their rows (and reads their
    stored layers), so every executor runs those first.
    """

    id: str
    model: ModelEntry
    layers: tuple[str, ...]
    ablated: str | None = None
    features: tuple[int, ...] = ()  # per layer, per image
    after: tuple[str, ...] = ()  # units whose results this one reads: they run first
    held: str = "ram"  # where its train layers are held, "ram" or "store" (the plan's cost model decides)
    streamed: tuple[str, ...] = ()  # its layers held nowhere: streamed through the network
    # Every layer of its model the study observes, probed or ablated: every unit of the model (and the
    # plan's calibration) folds the BatchNorms around these same layers (faceprobe.extract.folding), so a
    # layer's values do not depend on the unit that computes them.
    observed: frozenset[str] = frozenset()
    # Its layers after which the network can be cut (faceprobe.extract.pieces); once placed, those after
    # which it is cut: held in RAM, the unit then holds only the rows of one piece and of the layer feeding
    # it at a time. The cost model counts them so (faceprobe.run.cost.held_cuts), and the run cuts there.
    cuts: frozenset[str] = frozenset()
    fit_bytes: int | None = None  # working memory each layer PLS may use (the cost model decides)
    channel_features: tuple[int, ...] = ()  # per layer, the neurons of one channel (0: no channels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model.id,
            "layers": list(self.layers),
            "ablated": self.ablated,
            "after": list(self.after),
            "held": self.held,
            "streamed": list(self.streamed),
            "fit_bytes": self.fit_bytes,
            "cuts": sorted(self.cuts),
        }


# --- sources: datasets and models, through the library's loaders -------------------------------------------


def _dataset(config: RunConfig) -> Any:
    from faceprobe.data.registry import load_dataset
    from faceprobe.targets import with_targets

    data = config.data
    dataset = load_dataset(data.spec, skip_bad_images=data.skip_bad_images).naming(data.attributes)
    return with_targets(dataset, data.kinds, data.groups, f"{config.source or 'config'}: data")


def _catalogue(loaded: Any) -> list:
    """Every probe-able layer of a loaded network, at the input size its preprocessing gives."""
    import torch

    from faceprobe.extract.catalogue import catalogue

    h, w = loaded.preprocessing.input_size
    return catalogue(loaded.module, torch.zeros(2, 3, h, w))  # on the meta device inside its context


def _planned_catalogue(entry: ModelEntry) -> tuple[Any, list]:
    """The entry's network and its layers, for the plan. A registry network with random weights is built on
    the meta device (shapes without values): its initialisation, most of the time a large network takes to
    load, is paid once, by the unit that runs it. Other weights are loaded, which checks them before any
    work."""
    import contextlib

    import torch

    weightless = entry.weights == "random" and ":" not in entry.table.architecture
    with torch.device("meta") if weightless else contextlib.nullcontext():
        loaded = entry.load()
        return loaded.module, _catalogue(loaded)


# --- the draws ---------------------------------------------------------------------------------------------


def make_draws(dataset: Any, config: RunConfig) -> tuple[Draws, Any, dict[str, str]]:
    """The protocol's draws for this run, with Control_Random (seeded random labels) added.

    Also returns the attributes left out of ``attributes = "all"`` because a class has too few images in
    the pool, with the reason (a named attribute like that is refused when the study is planned).
    """
    from faceprobe.data.sampling import sample_protocol

    data = config.data
    labels = dataset.attributes
    if labels is None:
        raise FaceprobeError(f"{data.spec}: the dataset has no attribute labels to probe")
    labels = with_controls(labels, data.seed, data.controls)
    wanted = list(labels.columns if data.attributes == "all" else data.attributes)
    wanted += [name for name in control_names(data.controls) if name not in wanted]
    n_test = None if data.test < 0 else data.test
    dropped = {a: _too_few(dataset, a) for a in wanted if not is_control(a)}
    wanted = [a for a in wanted if not dropped.get(a)]  # only under "all": named ones were refused
    labelled = dataclasses.replace(dataset, attributes=labels)
    protocol = sample_protocol(
        labelled, wanted, n_train=data.train, n_val=data.val, n_test=n_test, seed=data.seed
    )
    return Draws.from_protocol(protocol, labels[wanted]), protocol, {a: w for a, w in dropped.items() if w}


# --- planning ----------------------------------------------------------------------------------------------


def plan_units(config: RunConfig, dataset: Any) -> list[Unit]:
    """Every unit of the study (finished or not), in a stable order, after checking every name it uses.

    Attributes (and the ablation's) against the dataset's labels, each model's architecture and weights,
    its layer selection and the ablation depths against its catalogue: every problem found is reported in
    one line, before any work, instead of the first one hours into the run.
    """
    problems = []
    known = set(dataset.attributes.columns) if dataset.attributes is not None else set()
    controls = control_names(config.data.controls)
    known.update(controls)
    wanted = config.data.attributes
    for attribute in [] if wanted == "all" else wanted:
        if attribute not in known:
            problems.append(_unknown("data.attributes", attribute, known | set(dataset.label_names)))
        elif not is_control(attribute) and (few := _too_few(dataset, attribute)):
            problems.append(f"data.attributes: {attribute} {few}; leave it out")
    ablation = config.ablation
    if ablation is not None and ablation.attributes != "all":
        studied = known if wanted == "all" else {*wanted, *controls}
        for attribute in ablation.attributes:
            if attribute not in studied:
                problems.append(_unknown("ablation.attributes", attribute, studied))
    units: list[Unit] = []
    for entry in model_entries(config):
        try:
            module, layers = _planned_catalogue(entry)
            selected = select_layers(layers, entry.layers)
        except FaceprobeError as err:
            problems.append(f"{entry.label}: {err}")
            continue
        first, start = len(units), 0
        for size in _group_sizes(
            selected, config, len(known) if wanted == "all" else len(wanted) + len(controls)
        ):
            group = selected[start : start + size]
            units.append(
                Unit(
                    f"{entry.slug}__layers{start:03d}",
                    entry,
                    tuple(info.name for info in group),
                    features=tuple(info.features for info in group),
                    channel_features=_channel_features(group),
                )
            )
            start += size
        probe_ids = tuple(u.id for u in units if u.model == entry)
        ablated_ids = set()
        for depth in ablation.depths if ablation else ():
            ablated = _ablated_layer(depth, layers, selected)
            if isinstance(ablated, str):
                problems.append(f"{entry.label}: {ablated}")
                continue
            if ablated.depth in ablated_ids:  # a depth and a layer name may name one layer
                continue
            ablated_ids.add(ablated.depth)
            later = [info for info in selected if info.depth > ablated.depth]
            units.append(
                Unit(
                    f"{entry.slug}__ablate{ablated.depth:03d}",
                    entry,
                    tuple(info.name for info in later),
                    ablated.name,
                    tuple(info.features for info in later),
                    probe_ids,
                    channel_features=_channel_features(later),
                )
            )
        observed = frozenset(name for unit in units[first:] for name in (*unit.layers, unit.ablated) if name)
        # under bfloat16 autocast a piece would start from float32 rows where the whole pass has bfloat16
        in_pieces = config.run.precision == "float32"
        units[first:] = [
            dataclasses.replace(
                unit, observed=observed, cuts=clean_cuts(module, unit.layers) if in_pieces else frozenset()
            )
            for unit in units[first:]
        ]
    if problems:
        raise FaceprobeError(f"{config.source or 'config'}: " + "; ".join(problems))
    return units


#: ``progress(description, total)`` starts a task and returns its ``advance(k)``.
Progress = Callable[[str, int | None], Callable[[int], None]]

#: Bytes of fitted state one probe unit may hold for the evaluation pass (the PLS rotations and VIP of its
#: layers, per attribute). A constant, not ``run.memory_gb``: the units of a run must not change on resume.
_UNIT_STATE_BYTES = 2 * 2**30


def _group_sizes(selected: Sequence, config: RunConfig, n_attributes: int) -> list[int]:
    """How many consecutive layers each probe unit of a model takes.

    ``run.layers_per_unit`` when set; by default (0) as many as the unit's fitted state allows, so that a
    model is usually one unit: its train images go through the network once, and its evaluation images
    once, after every layer is fitted.
    """
    fixed = config.run.layers_per_unit
    if fixed:
        return [min(fixed, len(selected) - g) for g in range(0, len(selected), fixed)]
    per_feature = n_attributes * (config.probe.components + 2) * 4  # rotations and VIP, float32
    sizes: list[int] = []
    held = 0
    for info in selected:
        cost = info.features * per_feature
        if sizes and held + cost <= _UNIT_STATE_BYTES:
            sizes[-1] += 1
            held += cost
        else:
            sizes.append(1)
            held = cost
    return sizes


#: Images of each class an attribute needs in the train + val pool for its probe to be fitted at all.
_MIN_PER_CLASS = 4


def _too_few(dataset: Any, attribute: str) -> str:
    """Why ``attribute`` cannot be probed on ``dataset``'s train + val pool ("" when it can)."""
    from faceprobe.targets import kind_of

    labels = dataset.attributes[attribute]
    if dataset.partitions is not None:
        labels = labels[dataset.partitions.reindex(labels.index).isin([0, 1]).to_numpy()]
    kind = kind_of(labels)
    if kind == "multiclass":
        counts = labels.value_counts()
        if int((counts >= _MIN_PER_CLASS).sum()) >= 2:
            return ""
        return (
            f"has fewer than two classes with {_MIN_PER_CLASS} images each in the train + val pool "
            f"({', '.join(f'{c}: {n}' for c, n in counts.items())}); a probe needs them"
        )
    if kind == "continuous":
        values = labels.dropna()
        if len(values) >= 4 * _MIN_PER_CLASS and values.nunique() > 2:
            return ""
        return (
            f"has {len(values)} labelled images ({values.nunique()} values) in the train + val pool; a "
            f"regression probe needs at least {4 * _MIN_PER_CLASS} and three values"
        )
    positive, negative = int((labels == 1).sum()), int((labels == 0).sum())
    if min(positive, negative) >= _MIN_PER_CLASS:
        return ""
    return (
        f"has {positive} positive and {negative} negative images in the train + val pool; a probe needs "
        f"at least {_MIN_PER_CLASS} of each"
    )


def _unknown(key: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"{key}: no attribute {name!r} in the data{hint}"


def _ablated_layer(depth: int | str, layers: Sequence, selected: Sequence) -> Any:
    """The catalogue layer an ablation depth (a catalogue depth or a layer name) names, or why none fits.

    Depth means what the tables' ``depth`` column means: the layer's place in the network's catalogue
    (``faceprobe layers MODEL``). Some probed layer must come after it.
    """
    last = selected[-1].depth if selected else -1
    match = [info for info in layers if info.depth == depth or info.name == depth]
    if match and match[0].depth < last:
        return match[0]
    valid = ", ".join(str(info.depth) for info in selected[:-1]) or "none"
    return (
        f"ablation depth {depth!r} is not a layer before the last probed one (depth {last}); give a "
        f"catalogue depth from 0 to {last - 1} or a layer name (`faceprobe layers`); the probed layers "
        f"before the last are at depths {valid}"
    )


def _channel_features(layers: Sequence[LayerInfo]) -> tuple[int, ...]:
    """Per layer, the neurons of one of its channels, whose top k its channel probes read (0: none)."""
    return tuple(int(np.prod(info.shape[1:])) if has_channels(info.shape) else 0 for info in layers)


def study_costs(config: RunConfig, run_dir: Path | None = None) -> list[UnitCost]:
    """What each unit of the study will cost (:mod:`faceprobe.run.cost`), planned and drawn, nothing run.

    With ``run_dir`` the layers are placed within the disk budget of its disk, and the time of each unit
    is estimated from rates measured on this machine there.
    """
    dataset = _dataset(config)
    units = plan_units(config, dataset)
    draws = make_draws(dataset, config)[0]
    if run_dir is None:
        return unit_costs(units, draws, config)
    rates = calibrate(units, config, len(draws.attributes), run_dir)
    return unit_costs(units, draws, config, rates, disk_budget(config, run_dir))


def _placed(units: Sequence[Unit], costs: Sequence[UnitCost]) -> list[Unit]:
    """The units with the places their costs chose for their layers (RAM, store, streamed)."""
    return [
        dataclasses.replace(
            unit, held=cost.held, streamed=cost.streamed, fit_bytes=cost.fit_bytes, cuts=cost.cuts
        )
        for unit, cost in zip(units, costs, strict=True)
    ]


# --- one unit ----------------------------------------------------------------------------------------------


def execute_unit(
    run_dir: str | Path, unit: Unit, later: Sequence[Unit] = (), progress: Progress | None = None
) -> str:
    """Run one unit and write its parts, then its done marker; returns the unit id. Safe to rerun.

    ``progress(description, total)`` (see :func:`run_study`) gets one task per unit, advanced by the
    images its passes run through the network.

    ``later`` are units that will run after this one and not at the same time (the local executor). When
    this unit writes its layers to the activation store, the store-bound layers of the later probe units
    of the same model are extracted in the same forward pass, so a network cut into groups of layers is
    still run once over the images; those units then find their layers stored. The unit's layers are held
    where the plan put them (``unit.held``, ``unit.streamed``).
    """
    run_dir = Path(run_dir)
    done = run_dir / "units" / f"{unit.id}.done"
    if done.exists():
        return unit.id
    config = parse_config(json.loads((run_dir / "manifest.json").read_text())["config"], str(run_dir))
    _log(run_dir, {"event": "start", "unit": unit.id})
    dataset = _dataset(config)
    draws = read_draws(run_dir)
    entry = unit.model
    loaded = entry.load()
    infos = {info.name: info for info in _catalogue(loaded)}
    train = tuple(draws.train_images())
    advance = None
    if progress is not None:
        what = f"ablation of {unit.ablated}" if unit.ablated else f"{unit.layers[0]} .. {unit.layers[-1]}"
        total = len(draws.images())  # streamed layers: the train images once more per pass of the fits
        total += len(train) * (config.probe.components + 1) * bool(unit.streamed)
        advance = progress(f"{entry.label}: {what}: images", None if unit.ablated else total)
    forward = Forward(
        loaded.module,
        loaded.preprocessing.transform(),
        dataset,
        train,
        config.run.batch_size,
        _device(config.run.device),
        config.run.precision,
        advance,
    )
    model_keys = {"model": entry.id, "variant": entry.variant}
    if unit.ablated and config.ablation is not None:
        attributes = draws.attributes if config.ablation.attributes == "all" else config.ablation.attributes
        ablation = Ablation(
            config.ablation.fractions,
            tuple(attributes),
            config.probe.top_k,
            config.probe.components,
            _baseline(run_dir, unit),
        )
        layers = [infos[unit.ablated], *(infos[n] for n in unit.layers if n in infos)]
        storage = None if unit.streamed else _storage(run_dir, config, loaded, forward.images, unit.held)
        placement = Placement(storage, frozenset(unit.streamed), unit.fit_bytes, unit.cuts)
        with folded_batchnorms(loaded.module, unit.observed):
            rows = ablation_rows(forward, draws, layers[0], layers[1:], ablation, placement)
        _write_part(
            run_dir,
            "ablation",
            unit.id,
            to_frame([{**model_keys, **r} for r in rows], "ablation"),
        )
    else:
        layers = [infos[n] for n in unit.layers]
        ahead = [
            infos[name]
            for other in later
            if other.model == unit.model and not other.ablated and other.held == "store"
            for name in other.layers
            if name not in other.streamed
        ]
        stored = unit.held == "store" and len(unit.streamed) < len(unit.layers)
        storage = _storage(run_dir, config, loaded, forward.images, unit.held, ahead) if stored else None
        placement = Placement(storage, frozenset(unit.streamed), unit.fit_bytes, unit.cuts)
        with folded_batchnorms(loaded.module, unit.observed):
            results, vip = probe_rows(forward, draws, layers, config.probe, config.data.seed, placement)
        identity = {
            **model_keys,
            "architecture": entry.architecture,
            "weights": entry.weights,
            "seed": entry.seed,
            "epoch": entry.epoch,
        }
        _write_part(run_dir, "results", unit.id, to_frame([{**identity, **r} for r in results]))
        if vip:
            _write_part(
                run_dir,
                "vip_study",
                unit.id,
                to_frame([{**model_keys, **r} for r in vip], "vip_study"),
            )
    atomic_write_text(done, time.strftime("%Y-%m-%dT%H:%M:%S"))
    _log(run_dir, {"event": "finish", "unit": unit.id})
    return unit.id


def _baseline(run_dir: Path, unit: Unit) -> dict[tuple[str, str, str, str], float]:
    """The unablated accuracies an ablation unit compares with: its model's probe rows, by (layer,
    attribute, representation, split). Probe and ablation units share the probe settings (top-k,
    components), so these are the rows the ablated passes would repeat."""
    parts = [pd.read_parquet(run_dir / "results.parquet" / f"{uid}.parquet") for uid in unit.after]
    rows = (
        pd.concat(parts) if parts else pd.DataFrame(columns=["layer", "attribute", "representation", "split"])
    )
    rows = rows[rows["layer"].isin(unit.layers)]
    if "metric" in rows:  # a continuous target's MAE rows: a drop is read in its R^2
        rows = rows[rows["metric"] != "mae"]
    keys = zip(rows["layer"], rows["attribute"], rows["representation"], rows["split"], strict=True)
    return dict(zip(keys, rows["accuracy"].astype(float), strict=True))


def read_draws(run_dir: Path) -> Draws:
    """The draws a run folder holds (written once, before any unit)."""
    return Draws(
        pd.read_parquet(run_dir / "draws.parquet"),
        pd.read_parquet(run_dir / "labels.parquet").set_index("image_id"),
    )


def _storage(
    run_dir: Path,
    config: RunConfig,
    loaded: Any,
    images: Sequence[str],
    held: str,
    extract_also: Sequence = (),
) -> Storage | None:
    """The activation store for a unit whose layers the plan put in the store (``held``), else None.

    The store lives inside the run folder (a config never writes outside it) and is keyed by the network's
    weights digest, its preprocessing and the images, so a rerun, or another unit of the same model, reads
    the batches already extracted instead of recomputing them. ``extract_also`` are later units' layers
    written in the same forward pass.
    """
    from faceprobe.extract.store import ActivationStore, store_key

    if held != "store":
        return None
    root = (run_dir / config.run.store).resolve()
    if not root.is_relative_to(run_dir.resolve()):
        raise FaceprobeError(f"{root}: run.store must stay inside the run folder {run_dir}")
    key = store_key(loaded.architecture, loaded.digest, loaded.preprocessing.to_dict(), list(images))
    store = ActivationStore.open(root, key, batch_size=config.run.batch_size)
    return Storage(store, np.dtype(config.run.store_dtype), tuple(extract_also))


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
    progress: Progress | None = None,
) -> RunStatus:
    """Run (or resume) the study into ``run_dir``; returns the status once every unit is finished.

    Every name is checked before the run folder is touched. One process at a time holds the run folder
    (:func:`faceprobe.run.lock.hold`); the Dask workers of that process are part of it.
    """
    run_dir = run_folder(run_dir)
    executor = executor or config.run.executor
    if executor not in ("local", "dask"):
        raise FaceprobeError(f"executor must be local or dask, not {executor!r}")
    dataset = _dataset(config)
    units = plan_units(config, dataset)  # first: a bad name fails before the run folder is written
    made = None if (run_dir / "manifest.json").exists() else make_draws(dataset, config)
    draws = read_draws(run_dir) if made is None else made[0]
    costs = unit_costs(units, draws, config, disk=disk_budget(config, run_dir))
    check_budgets(costs, config, run_dir)  # and a study the disk cannot hold
    units = _placed(units, costs)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold(run_dir):
        _prepare(config, run_dir, dataset, made)
        (run_dir / "units").mkdir(exist_ok=True)
        atomic_write_text(run_dir / "units" / "plan.json", json.dumps([u.to_dict() for u in units], indent=1))
        todo = [u for u in units if not (run_dir / "units" / f"{u.id}.done").exists()]
        advance = progress("work units", len(units)) if progress else (lambda k: None)
        advance(len(units) - len(todo))
        if executor == "local":
            for k, unit in enumerate(todo):
                execute_unit(run_dir, unit, todo[k + 1 :], progress)
                advance(1)
        else:
            _run_dask(
                run_dir,
                todo,
                scheduler if scheduler is not None else config.run.scheduler,
                workers or config.run.workers,
                advance,
            )
    status = run_status(run_dir)
    reclaimed = 0
    if status.complete and not config.run.keep_store:  # tables and reports never need the store
        reclaimed = reclaim_held(run_dir, config.run.store)
    failed = failed_attributes(read_table(run_dir))
    if failed:  # the tables stay: a NaN row says why, and nothing computed is lost
        attribute, why = next(iter(failed.items()))
        raise FaceprobeError(
            f"no probe of {', '.join(failed)} could be fitted ({attribute}: {why}); the rows are in "
            f"{run_dir / 'results.parquet'}"
        )
    return dataclasses.replace(status, reclaimed=reclaimed)


def _run_dask(run_dir: Path, units: Sequence[Unit], scheduler: str, workers: int, advance: Callable) -> None:
    """Each unit is one Dask task, depending on the tasks of the units it comes ``after``; a task whose
    worker dies is retried on another (``retries``).

    A problem of the user's (a :class:`FaceprobeError`) would fail the same way on every worker, so it
    is not retried: the task returns it, the other tasks are cancelled and it is raised here once.
    """
    import dask
    from dask.distributed import Client, LocalCluster, as_completed
    from dask.utils import parse_timedelta

    # Dask's own connect timeout (30 s unless its config says otherwise, e.g.
    # DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s): how long a scheduler that is starting gets.
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds")
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    try:
        try:
            client = Client(scheduler or cluster, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise FaceprobeError(
                f"cannot reach the Dask scheduler {scheduler} within {timeout:g} s ({err}); start "
                "it, or check the address (tcp://HOST:PORT)"
            ) from None
        with client:
            futures: dict[str, Any] = {}
            for unit in units:  # plan order: a unit's dependencies are submitted before it
                needs = [futures[uid] for uid in unit.after if uid in futures]
                futures[unit.id] = client.submit(
                    _dask_task, str(run_dir), unit, *needs, key=unit.id, retries=3, pure=False
                )
            for future in as_completed(list(futures.values())):
                problem = future.result()
                if problem is not None:
                    client.cancel(list(futures.values()))
                    raise FaceprobeError(problem)
                advance(1)
    finally:
        if cluster is not None:
            cluster.close()


def _dask_task(run_dir: str, unit: Unit, *after: str | None) -> str | None:
    """:func:`execute_unit` as a Dask task: a user's problem comes back as its message, not as a retry.

    ``after`` are the results of the tasks of ``unit.after``: passing them makes Dask run those first.
    The worker's allocator then reuses freed activation buffers, as the ``faceprobe`` command's does.
    """
    reuse_freed_buffers()
    try:
        execute_unit(run_dir, unit)
    except FaceprobeError as err:
        return str(err)
    return None


def study_settings(config: RunConfig) -> dict[str, Any]:
    """The settings that decide a run's results: all but how it runs (:data:`RESUMABLE`), as JSON values."""
    settings = json.loads(json.dumps(config.to_dict()))
    for table, keys in RESUMABLE.items():
        for key in keys:
            settings[table].pop(key, None)
    return settings


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two JSON-like dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            d
            for k in sorted(set(old) | set(new))
            for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def _prepare(config: RunConfig, run_dir: Path, dataset: Any, made: tuple | None) -> None:
    """Write the manifest, the draws and the baseline once; a resumed run must compute the same study.

    A resume may change how the run goes (device, batch size, executor, memory: :data:`RESUMABLE`), which
    the manifest then records, but not what it computes: other settings, or data whose ids or labels
    changed (its fingerprint), are refused with the keys that differ.
    """
    manifest_path = run_dir / "manifest.json"
    fingerprint = dataset.fingerprint()
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        previous = parse_config(manifest["config"], str(manifest_path))
        differ = _differences(study_settings(previous), study_settings(config))
        if differ:
            raise FaceprobeError(
                f"{run_dir} holds a run with other settings ({', '.join(differ)} differ); use a new folder, "
                "or the same settings to resume"
            )
        if manifest["data"].get("fingerprint", fingerprint) != fingerprint:
            raise FaceprobeError(
                f"{run_dir} was started on other data: {config.data.spec} no longer has the same images and "
                "labels (fingerprint differs); use a new folder, or the data the run started with"
            )
        if manifest["config"] != json.loads(json.dumps(config.to_dict())):
            manifest["config"] = config.to_dict()
            atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))
        return
    draws, protocol, dropped = made if made is not None else make_draws(dataset, config)
    write_results(draws.table, run_dir / "draws.parquet")
    write_results(draws.labels.rename_axis("image_id").reset_index(), run_dir / "labels.parquet")
    if config.baseline is not None:
        write_results(read_baseline(config.baseline.path), run_dir / "baseline.parquet")
    manifest = {
        "faceprobe_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": config.to_dict(),
        "models": [entry.to_dict() for entry in model_entries(config)],
        "data": {
            "spec": config.data.spec,
            "kind": getattr(dataset, "kind", ""),
            "fingerprint": fingerprint,
            "attributes": draws.attributes,
            "n_train": config.data.train,
            "n_val": config.data.val,
            "n_test": int((draws.table["split"] == "test").sum()),
            "n_images": len(draws.images()),
            "shortened": {a: list(sizes) for a, sizes in protocol.shortened.items()},
            "dropped": dropped,
            "skipped_images": [list(b) for b in (*dataset.skipped, *protocol.skipped)],
        },
        "versions": _versions(),
        "git_revision": _git_revision(),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, default=str))


# --- small helpers -----------------------------------------------------------------------------------------


def _write_part(run_dir: Path, table: str, unit_id: str, frame: pd.DataFrame) -> None:
    folder = run_dir / f"{table}.parquet"
    folder.mkdir(exist_ok=True)
    write_results(frame, folder / f"{unit_id}.parquet")


def _log(run_dir: Path, event: dict[str, Any]) -> None:
    """Append one JSON line in a single write, so concurrent workers and a kill never tear a line."""
    line = (json.dumps({"time": time.time(), "pid": os.getpid(), **event}) + "\n").encode()
    path = run_dir / "log.jsonl"
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
