"""What a study will cost before it runs: per work unit its images, features, mode, RAM and disk.

The figures follow from the plan and the draws alone (no image is read). A probe unit holds its layers of
the train images in RAM while they fit in ``run.memory_gb`` (default: three quarters of the free RAM),
else writes them to the activation store; either way it keeps its fitted state (PLS rotations and VIP per
attribute) for the evaluation pass, whose images are never stored. Stores stay until the run is finished,
so the run's peak disk is the sum of its models' stores plus the largest ablated pass. When that exceeds
``run.disk_gb`` (default: the free space of the run folder's disk less 10%), the widest stored layers are
streamed instead (held nowhere: one forward pass per pass of their fits) until the rest fits: wide layers
are the cheapest to stream for the disk they would take, and the layers before the deepest streamed one
then stream for free. ``run.mode`` forces one mode for every layer; a forced store that does not fit is
refused by :func:`check_budgets` before any work.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceprobe.errors import FaceprobeError
from faceprobe.extract.pieces import worth_cutting
from faceprobe.pls import MIN_STATE_BYTES, target_state_bytes
from faceprobe.run.config import RunConfig
from faceprobe.studies.layerwise import KNOWN_ROWS_BYTES, unit_fit_threads, unit_matrices_at_once

__all__ = [
    "Rates",
    "UnitCost",
    "calibrate",
    "check_budgets",
    "disk_budget",
    "free_memory",
    "held_bytes",
    "memory_budget",
    "peak_disk",
    "unit_costs",
]

#: Share of the free disk a run may fill when ``run.disk_gb`` is 0.
_FREE_SHARE = 0.9
#: Share of the free memory a unit may hold its layers in when ``run.memory_gb`` is not set.
_FREE_SHARE_RAM = 0.75


@dataclass(frozen=True)
class UnitCost:
    """One work unit's size: images through the network, features, where its train layers live, peaks."""

    unit: str
    model: str
    layers: int
    features: int
    train_images: int
    evaluation_images: int
    mode: str  # where its layers are: "ram", "store", "stream", or "ram+stream"/"store+stream" (some of each)
    ram_bytes: int
    disk_bytes: int
    passes: int = 1  # passes over its images (an ablation unit: one per attribute and fraction)
    seconds: float = float("nan")  # estimated from measured rates (:func:`calibrate`), NaN without them
    streamed: tuple[str, ...] = ()  # its layers streamed through the network instead of held
    held: str = "ram"  # where its other layers are held: "ram" or "store"
    forwards: int = 1  # forward passes over its train images (per pass; streaming: one per fit pass)
    fit_bytes: int = 0  # working memory each layer PLS may use (:func:`_fit_bytes`)
    cuts: frozenset[str] = frozenset()  # its held layers after which the network is cut (:func:`held_cuts`)


@dataclass(frozen=True)
class Rates:
    """This machine's measured speeds, from a short calibration (:func:`calibrate`).

    ``forward``: seconds per image through each unit's network up to its last layer; ``setup``: seconds to
    load each model and list its layers; ``pass_bytes``: bytes of a layer a PLS pass reads per second
    for the study's number of attributes; ``layer``: seconds of every probe of a small layer for all the
    study's attributes (the fixed cost of a layer: QDA fits, single units, the VIP study, whatever its
    width); ``disk_bytes``: bytes per second written and read back on the run folder's disk;
    ``working``: bytes each unit's forward needs besides its layers (the network's weights and, per image
    of a batch, three of its widest outputs up to the unit's last layer: an operation's input, its output
    and a block's shortcut); ``stream_pass_bytes``: the same as ``pass_bytes`` for a streamed layer, whose
    passes multiply where its rows stay (on an accelerator, there: :func:`~faceprobe.extract.lockstep.
    rows_device`); None where they are copied to the host, as on a CPU, and pass at ``pass_bytes``.
    """

    forward: Mapping[str, float]
    setup: Mapping[str, float]
    pass_bytes: float
    layer: float
    disk_bytes: float
    working: Mapping[str, int] = dataclasses.field(default_factory=dict)
    stream_pass_bytes: float | None = None


def unit_costs(
    units: Sequence[Any],
    draws: Any,
    config: RunConfig,
    rates: Rates | None = None,
    disk: int | None = None,
) -> list[UnitCost]:
    """The cost of each unit of ``units`` (runner Units, with their layers' ``features``) on ``draws``;
    with ``rates``, also its estimated time. With ``disk`` (bytes the run may fill) and ``run.mode =
    "auto"``, the widest stored layers (and those before them) are streamed until the stores fit in it."""
    forced = config.run.mode
    budget = memory_budget(config)
    union = draws.train_images()
    # (train images, evaluation images, passes, one attribute's train rows at most): a probe unit's, and an
    # ablation unit's (one attribute's images at a time, a pass per attribute and fraction)
    rows = max(draws.train_counts().values(), default=0)
    images = {None: (len(union), len(draws.evaluation_images(None, union)), 1, rows)}
    if any(unit.ablated for unit in units):
        passes = len(_ablated_attributes(config, draws)) * len(config.ablation.fractions)
        train, evaluation = _ablated_images(config, draws)
        images["ablated"] = (train, evaluation, passes, train)
    # An ablation unit probes its later layers for one attribute at a time. Its clean fit of the ablated
    # layer, for every attribute, is the fit a probe unit makes of that layer when the study probes it,
    # and is counted there.
    attributes = {unit.id: 1 if unit.ablated else len(draws.attributes) for unit in units}
    sizes = {}
    fits = {}
    for unit in units:
        n_images = images["ablated" if unit.ablated else None][0]
        fits[unit.id] = _fit_bytes(unit, n_images, config, attributes[unit.id], budget)
        held = held_bytes(unit, unit.layers, n_images) + fits[unit.id]
        store = forced == "store" or (forced == "auto" and held > budget)
        sizes[unit.id] = "store" if store else "ram", n_images
    streamed: dict[str, tuple[str, ...]] = {
        unit.id: tuple(unit.layers) if forced == "stream" else () for unit in units
    }
    if forced == "auto" and disk is not None:
        streamed = _stream_until_fits(units, sizes, config, disk)
    costs = []
    for unit in units:
        placed = sizes[unit.id][0], streamed[unit.id]
        mine = images["ablated" if unit.ablated else None]
        cost = _unit_cost(unit, mine, config, attributes[unit.id], placed, fits[unit.id])
        if rates is not None:
            cost = dataclasses.replace(
                cost,
                seconds=_seconds(cost, unit, config, rates),
                ram_bytes=cost.ram_bytes + rates.working.get(unit.id, 0),
            )
        costs.append(cost)
    return costs


def _stream_until_fits(
    units: Sequence[Any], sizes: Mapping[str, tuple[str, int]], config: RunConfig, disk: int
) -> dict[str, tuple[str, ...]]:
    """Which layers to stream so that the stores fit in ``disk`` bytes: the largest stores first (a probe
    unit's layer, or an ablation unit's passes, which then stream every layer). A unit's passes run the
    network up to its deepest streamed layer anyway, so every layer before that one streams too: it then
    costs no forward work, and no store writes or reads."""
    itemsize = np.dtype(config.run.store_dtype).itemsize
    stored: dict[tuple[str, str], int] = {}  # (unit, layer or "" for a whole ablation unit) -> bytes
    for unit in units:
        mode, n_images = sizes[unit.id]
        if mode != "store":
            continue
        if unit.ablated:
            stored[(unit.id, "")] = n_images * int(sum(unit.features)) * itemsize
        else:
            for layer, features in zip(unit.layers, unit.features, strict=True):
                stored[(unit.id, layer)] = n_images * features * itemsize
    by_id = {unit.id: unit for unit in units}
    streamed: dict[str, list[str]] = {unit.id: [] for unit in units}
    ablations = {unit.id for unit in units if unit.ablated}

    def peak() -> int:
        probes = sum(b for (uid, _), b in stored.items() if uid not in ablations)
        return probes + max((b for (uid, _), b in stored.items() if uid in ablations), default=0)

    by_size = sorted(stored, key=lambda key: -stored[key])
    while peak() > disk and by_size:
        uid, layer = by_size.pop(0)
        del stored[(uid, layer)]
        streamed[uid] = list(by_id[uid].layers) if layer == "" else [*streamed[uid], layer]
    for unit in units:
        if streamed[unit.id] and not unit.ablated:
            deepest = max(unit.layers.index(layer) for layer in streamed[unit.id])
            streamed[unit.id] = list(unit.layers[: deepest + 1])
    for unit in units:  # an ablation unit streams when the layer it ablates is streamed by its model
        if unit.ablated and any(unit.ablated in streamed[uid] for uid in unit.after):
            streamed[unit.id] = list(unit.layers)
    return {uid: tuple(n for n in by_id[uid].layers if n in chosen) for uid, chosen in streamed.items()}


def _unit_cost(
    unit: Any,
    work: tuple[int, int, int, int],
    config: RunConfig,
    n_attributes: int,
    placed: tuple[str, tuple[str, ...]],
    fit: int,
) -> UnitCost:
    """One unit's mode, RAM and disk for its ``work`` (train images, evaluation images, passes, and the
    most train rows of one attribute): its layers ``placed[1]`` streamed, the others held in ``placed[0]``
    ("ram" or "store"), its fits working in ``fit`` bytes (:func:`_fit_bytes`), which also bound how many
    attributes' unit matrices are held at once; and a batch of each attribute's evaluation rows read out
    after its unit probes are fitted."""
    held, streamed = placed
    *images, passes, rows = work
    stored_bytes = np.dtype(config.run.store_dtype).itemsize
    state_per_feature = n_attributes * (config.probe.components + 2) * 4
    features = int(sum(unit.features))
    kept = int(sum(f for layer, f in zip(unit.layers, unit.features, strict=True) if layer not in streamed))
    train = images[0]
    disk = train * kept * stored_bytes if held == "store" else 0
    kept_layers = [layer for layer in unit.layers if layer not in streamed]
    in_ram = held_bytes(unit, kept_layers, train)
    ram = features * state_per_feature + (in_ram if held == "ram" else 0)
    matrix = _unit_matrix_bytes(unit, config.probe, rows)
    ram += unit_matrices_at_once(unit_fit_threads(matrix, fit)) * matrix + n_attributes * KNOWN_ROWS_BYTES
    ram += config.run.batch_size * (features - kept) * 4 * (_QUEUED_BATCHES + 1)
    ram += _fits_at_once(unit, streamed, train, n_attributes, config.probe.components, fit)
    mode = held if not streamed else "stream" if kept == 0 else f"{held}+stream"
    # streamed: a pass for the means, one per component, one for the units, one for the evaluation rows
    forwards = config.probe.components + 3 if streamed else 1
    return UnitCost(
        unit.id,
        unit.model.label,
        len(unit.layers),
        features,
        *images,
        mode,
        ram,
        disk,
        passes,
        streamed=streamed,
        forwards=forwards,
        held=held,
        fit_bytes=fit,
        cuts=held_cuts(unit, kept_layers, train) if held == "ram" else frozenset(),
    )


def _fit_bytes(unit: Any, n_images: int, config: RunConfig, n_attributes: int, budget: int) -> int:
    """Working memory each layer PLS of the unit may use: the state of all its attributes on its widest
    layer (:func:`faceprobe.pls.target_state_bytes`), or half the memory ``budget``, at least 1 GiB.
    Attributes that do not fit in it at once are fitted in groups, each group its own passes over the
    layer: a stored or streamed layer is not in RAM, so its width alone does not bound its fits' memory.
    The same wherever the unit's layers are, so they are fitted in the same groups, to the same values."""
    widest = max(unit.features, default=0)
    need = n_attributes * target_state_bytes(n_images, widest, config.probe.components)
    return min(need, max(MIN_STATE_BYTES, budget // 2))


def _unit_matrix_bytes(unit: Any, probe: Any, rows: int) -> int:
    """One attribute's unit matrix on the unit's widest pick: the columns its VIP picks (its top-k
    channels, its top-k neurons and the VIP study's neurons) on its train ``rows``, float32."""
    channels = max((probe.top_k * size for size in unit.channel_features), default=0)
    return rows * (channels + probe.top_k + probe.vip_study) * 4


def _fits_at_once(
    unit: Any, streamed: Sequence[str], n_images: int, n_attributes: int, components: int, fit: int
) -> int:
    """The fits' working memory at its peak: the held layers are fitted one at a time, each in at most
    ``fit`` bytes; the streamed ones all at once, in lockstep (:mod:`faceprobe.extract.lockstep`), each in
    at most ``fit`` bytes too, so that its groups of attributes, and its values, are those of a held layer."""

    def one(features: int) -> int:
        return min(fit, n_attributes * target_state_bytes(n_images, features, components))

    sizes = dict(zip(unit.layers, unit.features, strict=True))
    held = max((one(f) for layer, f in sizes.items() if layer not in streamed), default=0)
    return max(held, sum(one(sizes[layer]) for layer in streamed))


def held_cuts(unit: Any, layers: Sequence[str], n_images: int) -> frozenset[str]:
    """The layers after which a unit holding ``layers`` (those of its layers it holds) of ``n_images`` in
    RAM cuts its network (:mod:`faceprobe.extract.pieces`): its clean cuts (``unit.cuts``) among them, or
    none where the layers are too small to be worth cutting
    (:func:`~faceprobe.extract.pieces.worth_cutting`). The run cuts there and nowhere else."""
    features = sum(f for name, f in zip(unit.layers, unit.features, strict=True) if name in layers)
    return frozenset(unit.cuts & set(layers)) if worth_cutting(features * n_images * 4) else frozenset()


def held_bytes(unit: Any, layers: Sequence[str], n_images: int) -> int:
    """Bytes a unit holds at once in RAM for ``layers`` (those of its layers it holds) of ``n_images``.

    Run piece by piece, cut after the layers :func:`held_cuts` gives, that is a piece's layers and the
    layer feeding it, plus the memory of one layer kept for reuse (:class:`faceprobe.allocator.ReusedArrays`);
    without a cut, every layer at once.
    """
    kept = [(name, f) for name, f in zip(unit.layers, unit.features, strict=True) if name in layers]
    whole = sum(f for _, f in kept) * n_images * 4
    cuts = held_cuts(unit, layers, n_images)
    if not cuts:
        return whole
    peak, source, piece = 0, 0, 0
    for i, (name, features) in enumerate(kept):
        piece += features
        if name in cuts or i == len(kept) - 1:
            peak, source, piece = max(peak, source + piece), features, 0
    return min(whole, (peak + max(f for _, f in kept)) * n_images * 4)


#: Batches of a streamed layer waiting for its fit, or being read by it (lockstep's queue, plus one).
_QUEUED_BATCHES = 2


def _ablated_images(config: RunConfig, draws: Any) -> tuple[int, int]:
    """The most train and evaluation images one ablated attribute's passes run over."""
    attributes = _ablated_attributes(config, draws)
    train = max(len(draws.train_images([a])) for a in attributes)
    evaluation = max(len(draws.evaluation_images([a], draws.train_images([a]))) for a in attributes)
    return train, evaluation


def _ablated_attributes(config: RunConfig, draws: Any) -> list[str]:
    wanted = config.ablation.attributes if config.ablation is not None else "all"
    return list(draws.attributes) if wanted == "all" else list(wanted)


def _seconds(cost: UnitCost, unit: Any, config: RunConfig, rates: Rates) -> float:
    """Setup, then per pass: the images through the network (the train images once more for each pass of
    the fits of streamed layers), the fits' passes over the train layers (components + 1 for the PLS, one
    for the picked units: a pass over a stored or streamed layer, row gathers of about as much time from
    one in RAM), and the store's writes and reads."""
    images = cost.train_images * cost.forwards + cost.evaluation_images
    forward = rates.forward[unit.id] * images
    streamed = sum(f for layer, f in zip(unit.layers, unit.features, strict=True) if layer in cost.streamed)
    per_pass = (cost.features - streamed) / rates.pass_bytes
    per_pass += streamed / (rates.stream_pass_bytes or rates.pass_bytes)
    fits = cost.train_images * 4 * (config.probe.components + 2) * per_pass
    store = 2 * cost.disk_bytes / rates.disk_bytes
    probes = cost.layers * rates.layer * (1 if unit.ablated is None else 1 / len(config.ablation.fractions))
    return rates.setup[unit.model.id] + cost.passes * (forward + fits + store + probes)


#: Images timed per unit to measure its forward rate, and the size of the matrix that times a PLS pass.
_CALIBRATION_IMAGES = 16
_CALIBRATION_SHAPE = (512, 32768)


def calibrate(units: Sequence[Any], config: RunConfig, n_attributes: int, folder: Path) -> Rates:
    """Measure this machine's rates for ``units`` (a few seconds): each model loaded once and a batch of
    random images run up to each unit's last layer, a PLS fit of ``n_attributes`` targets on a random
    matrix, and a file written and read back where the run folder will be."""
    import time

    import torch

    from faceprobe.devices import channels_last, resolve_device
    from faceprobe.extract import catalogue, extract
    from faceprobe.extract.folding import folded_batchnorms
    from faceprobe.extract.lockstep import rows_device
    from faceprobe.pls import fit_shared

    device = resolve_device(config.run.device)
    forward: dict[str, float] = {}
    setup: dict[str, float] = {}
    working: dict[str, int] = {}
    for entry in {unit.model.id: unit.model for unit in units}.values():
        start = time.perf_counter()
        loaded = entry.load()
        batch = min(config.run.batch_size, _CALIBRATION_IMAGES)
        images = torch.rand(batch, 3, *loaded.preprocessing.input_size)
        outputs = catalogue(loaded.module, images[:2])  # as a unit does before its passes
        setup[entry.id] = time.perf_counter() - start
        tensors = (*loaded.module.parameters(), *loaded.module.buffers())
        weights = sum(t.numel() * t.element_size() for t in tensors)
        names = [info.name for info in outputs]
        for unit in (u for u in units if u.model.id == entry.id):
            upto = outputs[: names.index(unit.layers[-1]) + 1] if unit.layers[-1] in names else outputs
            widest = max((info.features for info in upto), default=0)
            working[unit.id] = weights + 3 * config.run.batch_size * widest * 4
            last = [unit.layers[-1]]
            # the network as the units run it: BatchNorms folded around the observed layers, channels-last
            # (whose per-pass conversion is no per-image cost)
            with folded_batchnorms(loaded.module, unit.observed), channels_last(loaded.module, device):
                # warm at the timed batch's shape: a CPU's first forward of a shape prepares its kernels
                extract(loaded.module, images, last, device=device, precision=config.run.precision)
                start = time.perf_counter()
                extract(loaded.module, images, last, device=device, precision=config.run.precision)
                forward[unit.id] = (time.perf_counter() - start) / len(images)
    rng = np.random.default_rng(0)
    X = rng.standard_normal(_CALIBRATION_SHAPE, dtype=np.float32)
    Y = rng.integers(0, 2, (X.shape[0], n_attributes)).astype(float)
    masks = rng.random(Y.shape) < 0.5
    start = time.perf_counter()
    fit_shared(X, Y, masks, config.probe.components)
    pass_bytes = X.nbytes * (config.probe.components + 1) / (time.perf_counter() - start)
    layer = _layer_seconds(config, n_attributes)
    rates = Rates(forward, setup, pass_bytes, layer, _disk_rate(folder), working)
    if rows_device(device) is None:
        return rates
    seconds = _streamed_fit_seconds(Y, masks, config.probe.components, device)
    return dataclasses.replace(rates, stream_pass_bytes=X.nbytes * (config.probe.components + 1) / seconds)


def _streamed_fit_seconds(Y: np.ndarray, masks: np.ndarray, components: int, device: Any) -> float:
    """Seconds of a streamed fit of ``Y`` on a layer of :data:`_CALIBRATION_SHAPE` whose rows are made on
    ``device`` in batches, as a network's outputs are, so its passes multiply there."""
    import time

    import torch

    from faceprobe.extract.lockstep import fit_in_lockstep
    from faceprobe.pls import fit_shared

    n, m = _CALIBRATION_SHAPE
    generator = torch.Generator(device).manual_seed(0)
    rows = torch.randn((_CALIBRATION_IMAGES, m), generator=generator, device=device)

    def run_pass(names: Sequence[str], deliver: Callable[[str, Any], None]) -> None:
        for _ in range(n // len(rows)):
            deliver(names[0], rows)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    fit_in_lockstep(run_pass, {"X": (n, m)}, lambda name, X: fit_shared(X, Y, masks, components), device)
    return time.perf_counter() - start


def _layer_seconds(config: RunConfig, n_attributes: int) -> float:
    """Seconds to probe a small layer (8 channels of 2x2, 256 images) for ``n_attributes`` attributes."""
    import time

    from faceprobe.studies.layerwise import AttributeRows, probe_layer

    rng = np.random.default_rng(1)
    X = rng.standard_normal((256, 32), dtype=np.float32)
    half = np.arange(128)
    rows = {}
    for a in range(n_attributes):
        y = rng.integers(0, 2, 256)
        rows[str(a)] = AttributeRows(half, half + 128, y[:128], y[128:])
    probe = config.probe
    start = time.perf_counter()
    probe_layer(X, (8, 2, 2), rows, probe.top_k, probe.components, probe.single_units, probe.vip_study)
    return time.perf_counter() - start


def _disk_rate(folder: Path) -> float:
    """Bytes per second written (and synced) then read back in the nearest existing folder of ``folder``."""
    import os
    import tempfile
    import time

    while not folder.exists():
        folder = folder.parent
    data = os.urandom(32 * 2**20)
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".faceprobe-disk-rate-") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        handle.seek(0)
        handle.read()
    return 2 * len(data) / (time.perf_counter() - start)


def memory_budget(config: RunConfig) -> int:
    """Bytes a work unit may hold its layers in: ``run.memory_gb``, or by default three quarters of the
    memory this machine has free (the rest for the network, the fitted state and the system), shared by the
    workers of a local Dask cluster. Holding in RAM is the fast path; the store takes what does not fit."""
    if config.run.memory_gb is not None:
        return int(config.run.memory_gb * 2**30)
    return int(free_memory(config) * _FREE_SHARE_RAM)


def free_memory(config: RunConfig) -> int:
    """Bytes of RAM this machine has free for one work unit: all of it, or a local Dask cluster's worker's
    share. No unit's peak may exceed it (:func:`check_budgets`)."""
    import psutil

    workers = config.run.workers if config.run.executor == "dask" else 1
    return int(psutil.virtual_memory().available / workers)


def disk_budget(config: RunConfig, run_dir: Path) -> int:
    """Bytes the run may fill: ``run.disk_gb``, or the free space of the run folder's disk less 10%."""
    if config.run.disk_gb:
        return int(config.run.disk_gb * 2**30)
    place = run_dir
    while not place.exists():
        place = place.parent
    return int(shutil.disk_usage(place).free * _FREE_SHARE)


def peak_disk(costs: Sequence[UnitCost]) -> int:
    """Stores stay until the run ends: every probe unit's store, plus the largest ablated pass's."""
    ablated = [c.disk_bytes for c in costs if "__ablate" in c.unit]
    return sum(c.disk_bytes for c in costs if "__ablate" not in c.unit) + max(ablated, default=0)


def check_budgets(costs: Sequence[UnitCost], config: RunConfig, run_dir: Path) -> None:
    """Refuse, in one line, a study whose activation stores would not fit its disk budget (only a study
    whose ``run.mode`` forces the store: by default what does not fit is streamed), or one of whose work
    units would need more RAM at its peak than this machine has free (:func:`free_memory`)."""
    largest = max(costs, key=lambda cost: cost.ram_bytes, default=None)
    free = free_memory(config)
    if largest is not None and largest.ram_bytes > free:
        held = "ram" in largest.mode and config.run.memory_gb is not None
        hint = "set run.memory_gb lower to store its layers, or " if held else ""
        raise FaceprobeError(
            f"work unit {largest.unit} needs {_gib(largest.ram_bytes)} of RAM at its peak but this machine "
            f"has {_gib(free)} free{' per Dask worker' if config.run.executor == 'dask' else ''} "
            f"({_gib(largest.ram_bytes - free)} too many); {hint}lower probe.top_k, probe.vip_study or "
            "data.train, or probe fewer attributes, or fewer layers per unit (run.layers_per_unit)"
        )
    budget, peak = disk_budget(config, run_dir), peak_disk(costs)
    if peak > budget:
        hint = '; store_dtype = "float16" halves it' if config.run.store_dtype == "float32" else ""
        raise FaceprobeError(
            f"the study needs {_gib(peak)} of activation store but run.disk_gb allows {_gib(budget)} "
            f'({_gib(peak - budget)} too many); set run.mode = "auto" to stream what does not fit, '
            f"probe fewer layers, draw fewer train images, or free disk{hint}"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
