"""What one work unit computes: probes for a group of layers of one model, or an ablation study.

A unit gets the network, the preprocessing, the images and the draws (and an ablation unit the rows it
compares with), and returns tidy rows. One forward pass per batch serves every layer of the group (the
forward stops right after the group's last layer), and every attribute shares that layer's activations:
the union of the train draws is extracted once and fitted on, each attribute's train draw a row set of
it; then the validation and test images outside it go through the network once, reduced on the spot to
what scoring needs.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from faceprobe.allocator import ReusedArrays
from faceprobe.errors import ProbeInputError
from faceprobe.extract import LayerInfo, capture, extract, stream_outputs
from faceprobe.extract.ablation import ablate
from faceprobe.extract.lockstep import Deliver, fit_in_lockstep
from faceprobe.extract.pieces import HeldRows, Piece, cut_pieces, layout
from faceprobe.extract.store import ActivationStore, CorruptStoreError, extract_to_store, store_key
from faceprobe.pls import one_blas_thread
from faceprobe.run.config import ProbeConfig
from faceprobe.studies.layerwise import AttributeRows, LayerFit, LayerProbes, Readout, fit_layer
from faceprobe.targets import kind_of

__all__ = [
    "Ablation",
    "Draws",
    "Forward",
    "Placement",
    "Settings",
    "Storage",
    "ablation_rows",
    "attribute_rows",
    "probe_group",
    "probe_rows",
]


@dataclass(frozen=True)
class Draws:
    """The protocol's image sets: per attribute a train and a validation draw, plus the shared test images.

    ``table`` is tidy (attribute, split, image_id; split in train/val/test, test rows with attribute "*"),
    ``labels`` the labels of every image used, per attribute (Control_Random included): 0/1, or of another
    kind of target (:mod:`faceprobe.targets`, the kind read from the column's dtype).
    """

    table: pd.DataFrame
    labels: pd.DataFrame

    @classmethod
    def from_protocol(cls, protocol: Any, labels: pd.DataFrame) -> Draws:
        """The draws of a :class:`faceprobe.data.sampling.Protocol`, with ``labels`` of every image used."""
        table = protocol.to_frame().astype({"attribute": "string"}).fillna({"attribute": "*"})
        return cls(table.reset_index(drop=True), labels.loc[sorted(set(table["image_id"]))])

    def images(self) -> list[str]:
        return sorted(set(self.table["image_id"]))

    def train_images(self, attributes: Sequence[str] | None = None) -> list[str]:
        """The union of the train draws of ``attributes`` (default: all): the images probes are fitted on.

        Images in the same train draws come together (ordered by the draws they are in, then by id): the
        probes' passes multiply each block of rows by the attributes that fit on it only
        (:func:`faceprobe.pls.fit_shared`), so a block of one draw's images costs one attribute, not all.
        """
        table = self.table[self.table["split"] == "train"]
        if attributes is not None:
            table = table[table["attribute"].isin(list(attributes))]
        draws = table.groupby("image_id", sort=False)["attribute"].agg(lambda a: tuple(sorted(a)))
        return [image for _, image in sorted(zip(draws, draws.index, strict=True))]

    def evaluation_images(self, attributes: Sequence[str] | None, outside: Sequence[str]) -> list[str]:
        """The validation and test images of ``attributes`` (default: all) that are not in ``outside``."""
        table = self.table[self.table["split"] != "train"]
        if attributes is not None:
            table = table[table["attribute"].isin([*attributes, "*"])]
        return sorted(set(table["image_id"]) - set(outside))

    def train_counts(self) -> dict[str, int]:
        """Per attribute, its train images: the rows of its unit matrices
        (:func:`faceprobe.studies.layerwise.fit_layer`)."""
        train = self.table[self.table["split"] == "train"].groupby("attribute")["image_id"].nunique()
        return {a: int(train.get(a, 0)) for a in self.attributes}

    @property
    def attributes(self) -> list[str]:
        return [a for a in self.table["attribute"].unique() if a != "*"]


def attribute_rows(draws: Draws, images: Sequence[str], attributes: Sequence[str] | None = None) -> dict:
    """Each attribute's rows of the union matrix whose rows are ``images``."""
    position = pd.Series(np.arange(len(images)), index=list(images))
    table = draws.table
    test_ids = table.loc[table["split"] == "test", "image_id"].tolist()
    rows = {}
    for attribute in attributes or draws.attributes:
        mine = table[table["attribute"] == attribute]
        parts = {s: mine.loc[mine["split"] == s, "image_id"].tolist() for s in ("train", "val")}
        kind = kind_of(draws.labels[attribute])
        labels = _label_values(draws.labels[attribute], kind)
        test = [i for i in test_ids if pd.notna(labels.get(i))]
        rows[attribute] = AttributeRows(
            train=position[parts["train"]].to_numpy(),
            val=position[parts["val"]].to_numpy(),
            y_train=_values(labels, parts["train"], kind),
            y_val=_values(labels, parts["val"], kind),
            test=position[test].to_numpy(),
            y_test=_values(labels, test, kind),
            kind=kind,
        )
    return rows


def _values(labels: pd.Series, images: Sequence[str], kind: str) -> np.ndarray:
    """The labels of ``images`` (all labelled): class codes as integers, else as :func:`_label_values`."""
    values = labels.loc[list(images)].to_numpy()
    return values.astype(np.intp) if kind == "multiclass" else values


def _label_values(labels: pd.Series, kind: str) -> pd.Series:
    """A label column as the probes read it: 0/1 ``int8``, class codes (missing NaN), or float values."""
    if kind == "multiclass":
        codes = labels.cat.codes.astype(np.float64)
        return codes.where(codes >= 0)
    if kind == "continuous":
        return labels.astype(np.float64)
    return labels.astype(np.int8)


@dataclass(frozen=True)
class Forward:
    """A unit's network over its images: what every extraction of the unit shares.

    ``images`` are the images probes are fitted on (the union of the train draws, each image once): the
    only ones held in RAM or stored. Evaluation images go through the network once more, after the fits,
    and leave only their readouts (:class:`faceprobe.studies.layerwise.Readout`). ``progress`` is called
    with the number of images each batch finishes.
    """

    model: nn.Module
    transform: Callable
    dataset: Any
    images: tuple[str, ...]
    batch_size: int = 64
    device: torch.device | str = "cpu"
    precision: str = "float32"
    progress: Callable[[int], None] | None = None

    def loader(self) -> DataLoader:
        images = self.dataset.torch_dataset(self.images, transform=self.transform)
        return DataLoader(images, batch_size=self.batch_size, shuffle=False)

    def over(self, images: Sequence[str]) -> Forward:
        """The same network over other images."""
        return dataclasses.replace(self, images=tuple(images))


@dataclass(frozen=True)
class Storage:
    """Where a unit's layers go when they outgrow RAM: the activation store, its dtype, and the layers of
    later units written in the same forward pass (probed by those units)."""

    store: ActivationStore
    dtype: Any = np.float32
    extract_also: tuple[LayerInfo, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where a unit's layers of the train images are (the plan's choice): held in RAM, in the activation
    store (``storage``), or, for the layers named in ``streamed``, nowhere; the working memory each
    layer PLS may use (``fit_bytes``, None: its default); and, held in RAM, the layers after which the
    network is cut into pieces (``cuts``, :mod:`faceprobe.extract.pieces`; none: run whole)."""

    storage: Storage | None = None
    streamed: frozenset[str] = frozenset()
    fit_bytes: int | None = None
    cuts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Ablation:
    """What an ablation unit zeroes and re-probes (the top ``fractions`` of VIP neurons, per attribute),
    and the unablated accuracies it compares with, by (layer, attribute, representation, split)."""

    fractions: tuple[float, ...]
    attributes: tuple[str, ...]
    top_k: int = 8
    components: int = 8
    baseline: Mapping[tuple[str, str, str, str], float] = dataclasses.field(default_factory=dict)


class _InMemory:
    """A unit's layers in RAM, extracted piece by piece as the probes ask for them.

    The network is cut after the layers in ``cuts`` (the plan's choice, :func:`faceprobe.run.cost.held_cuts`;
    :mod:`faceprobe.extract.pieces`): each piece runs over every train image, the first on the images, a
    later one on the rows of the layer before it, so only those rows and the piece's own are held at a
    time, not the whole unit's. A layer's rows go once it is probed and, if they feed the next piece, once
    that piece has run; their memory is then lent to the next layers
    (:class:`faceprobe.allocator.ReusedArrays`). The network still runs once over each image; without
    cuts it is one piece, run once.
    """

    def __init__(self, forward: Forward, layers: Sequence[LayerInfo], cuts: frozenset[str]) -> None:
        self.forward = forward
        self.shapes = {info.name: info.shape for info in layers}
        self.pieces = collections.deque(cut_pieces(forward.model, [info.name for info in layers], cuts))
        self.arrays: dict[str, np.ndarray] = {}
        self.strides: dict[str, tuple[int, ...] | None] = {}  # of the layers that feed a piece
        self.memory = ReusedArrays()
        self.passed = 0  # images through pieces, over all pieces: each piece counts 1 / len(pieces) of each
        self.n_pieces = len(self.pieces)

    def probe(self, info: LayerInfo, probe: Callable[[Any], Any]) -> Any:
        """``probe`` of the layer's (images x features) array, which is then dropped: each is probed once."""
        while info.name not in self.arrays:
            self._run(self.pieces.popleft())
        result = probe(self.arrays[info.name])
        if not any(piece.source == info.name for piece in self.pieces):
            self.memory.give(self.arrays, info.name)
        return result

    def _run(self, piece: Piece) -> None:
        forward = self.forward
        images = self._images(piece)
        feeding = [name for name in piece.layers[-1:] if any(p.source == name for p in self.pieces)]
        with capture(piece.module, feeding, self._record_layout):
            self.arrays |= extract(
                piece.module,
                images,
                piece.layers,
                device=forward.device,
                progress=None if forward.progress is None else self._advance,
                precision=forward.precision,
                allocate=self.memory.take,
            )
        del images
        if piece.source is not None:
            self.memory.give(self.arrays, piece.source)

    def _images(self, piece: Piece) -> DataLoader:
        """What ``piece`` runs on: the train images, or the rows of the layer before it."""
        forward = self.forward
        if piece.source is None:
            return forward.loader()
        source = piece.source
        rows = HeldRows(self.arrays[source], self.shapes[source], self.strides.get(source))
        return DataLoader(rows, batch_size=forward.batch_size, collate_fn=HeldRows.collate)

    def _advance(self, images: int) -> None:
        """The unit's progress in train images, each piece's batches counting for an equal share."""
        shown = self.passed // self.n_pieces
        self.passed += images
        if (now := self.passed // self.n_pieces) > shown:
            self.forward.progress(now - shown)  # type: ignore[misc]

    def _record_layout(self, name: str, output: torch.Tensor) -> None:
        self.strides.setdefault(name, layout(output))


class _OnDisk:
    """A unit's layers in the activation store: extracted once (what the store lacks), probed from disk.

    A chunk that fails its checksum while a probe reads it is not used: the store is scrubbed, the bad
    batches are extracted again, and the layer is probed anew.
    """

    def __init__(self, extract_missing: Callable[[], Any], store: ActivationStore) -> None:
        self.extract_missing = extract_missing
        self.store = store
        extract_missing()

    def probe(self, info: LayerInfo, probe: Callable[[Any], Any]) -> Any:
        try:
            return probe(self.store.layer(info.name))
        except CorruptStoreError:
            self.store.scrub([info.name])
            self.extract_missing()
            return probe(self.store.layer(info.name))


def _activations(
    forward: Forward, layers: Sequence[LayerInfo], placement: Placement = Placement()
) -> _InMemory | _OnDisk:
    """The layers of the images, extracted into RAM (cut after ``placement.cuts``) without a store in
    ``placement``, else into its store."""
    storage = placement.storage
    if storage is None:
        return _InMemory(forward, layers, placement.cuts)
    return _OnDisk(
        functools.partial(
            extract_to_store,
            forward.model,
            forward.dataset.torch_dataset(forward.images, transform=forward.transform),
            [*layers, *storage.extract_also],
            storage.store,
            dtype=storage.dtype,
            device=forward.device,
            progress=forward.progress,
            precision=forward.precision,
        ),
        storage.store,
    )


def probe_rows(
    forward: Forward,
    draws: Draws,
    layers: Sequence[LayerInfo],
    probe: ProbeConfig,
    seed: int = 0,
    placement: Placement = Placement(),
) -> tuple[list[dict], list[dict]]:
    """Probe every layer of ``layers`` for every attribute: (result rows, VIP-study rows).

    Without a store in ``placement`` the layers of the train images are held in memory; with one (keyed by
    this model and those images) they are extracted into it, batches already there are not recomputed, and
    each layer is fitted straight from disk, so memory no longer grows with the layer width. Layers it
    streams are held nowhere (:func:`probe_group`). ``seed`` draws the VIP study's neurons.
    """
    settings = Settings(probe.top_k, probe.components, probe.single_units, probe.vip_study, seed)
    outputs = probe_group(forward, draws, draws.attributes, layers, settings, placement)
    results, vip_rows = [], []
    for info in layers:
        out = outputs[info.name]
        layer_keys = {"layer": info.name, "depth": info.depth, "kind": info.kind, "n_features": info.features}
        results += [{**layer_keys, **row} for row in out.rows]
        vip_rows += [{"layer": info.name, "depth": info.depth, **row} for row in out.vip_rows]
    return results, vip_rows


@dataclass(frozen=True)
class Settings:
    """How each layer is probed (:func:`faceprobe.studies.layerwise.fit_layer`'s settings)."""

    k: int = 8
    n_components: int = 8
    single_units: bool = False
    vip_study: int = 0
    seed: int = 0


def probe_group(
    forward: Forward,
    draws: Draws,
    attributes: Sequence[str],
    layers: Sequence[LayerInfo],
    settings: Settings,
    placement: Placement = Placement(),
) -> dict[str, LayerProbes]:
    """Fit every layer's probes on the train images, then score them on the evaluation images.

    The train images (``forward.images``) are extracted once, into RAM or the store, and each layer is
    fitted from there; the layers ``placement`` streams are held nowhere: they are fitted together, each
    pass of their fits a forward pass over the train images (:mod:`faceprobe.extract.lockstep`). The
    validation and test images outside the train images then go through the network once, the pass
    stopping after the last layer, and each layer's output batch is reduced on the spot to its readouts:
    evaluation images are never held or stored. Where a layer is held does not change its results.
    """
    evaluation = draws.evaluation_images(attributes, forward.images)
    rows = attribute_rows(draws, [*forward.images, *evaluation], attributes)

    def fit(info: LayerInfo, X: Any) -> LayerFit:
        return fit_layer(X, info.shape, rows, **dataclasses.asdict(settings), max_bytes=placement.fit_bytes)

    fits: dict[str, LayerFit] = {}
    held = [info for info in layers if info.name not in placement.streamed]
    if held:
        source = _activations(forward, held, placement)
        fits |= {info.name: source.probe(info, functools.partial(fit, info)) for info in held}
        del source
    stream = {info.name: info for info in layers if info.name in placement.streamed}
    if stream:
        fits |= _streamed(forward, list(stream.values()), lambda name, X: fit(stream[name], X))
    later = _readouts(forward.over(evaluation), {info.name: fits[info.name].readout for info in layers})
    return {info.name: fits[info.name].score(later.get(info.name)) for info in layers}


def _streamed(
    forward: Forward, layers: Sequence[LayerInfo], fit: Callable[[str, Any], LayerFit]
) -> dict[str, LayerFit]:
    """``fit`` of each layer of the train images, the layers streamed through the network in lockstep."""

    def run_pass(names: Sequence[str], deliver: Deliver) -> None:
        stream_outputs(
            forward.model,
            forward.loader(),
            list(names),
            lambda features, capacity: _Delivery(deliver),
            forward.device,
            forward.progress,
            precision=forward.precision,
        )

    shapes = {info.name: (len(forward.images), info.features) for info in layers}
    with one_blas_thread():  # the layers' fits run at once, on threads of their own, from first to last
        return fit_in_lockstep(run_pass, shapes, fit, forward.device)


class _Delivery:
    """Consumes a streamed pass: each layer's output batch, handed to the lockstep fits (which copy it,
    to the host or on its device: :func:`faceprobe.extract.lockstep.rows_device`)."""

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def start(self, n: int) -> None:
        pass

    def __call__(self, name: str, output: torch.Tensor) -> None:
        self.deliver(name, output)


class _ReadoutSink:
    """Consumes an evaluation pass: each layer's output batch becomes its readout rows, on its device."""

    def __init__(self, readouts: Mapping[str, Readout], capacity: int) -> None:
        self.readouts = readouts
        self.out = {name: np.empty((capacity, r.width), dtype=np.float32) for name, r in readouts.items()}
        self.rows = slice(0, 0)

    def start(self, n: int) -> None:
        self.rows = slice(self.rows.stop, self.rows.stop + n)

    def __call__(self, name: str, output: torch.Tensor) -> None:
        self.out[name][self.rows] = self.readouts[name](output).cpu().numpy()


def _readouts(forward: Forward, readouts: Mapping[str, Readout]) -> dict[str, np.ndarray]:
    """The readouts of ``forward``'s images for each layer, from one forward pass (none without images)."""
    if not forward.images:
        return {}
    sinks: list[_ReadoutSink] = []

    def sink(features: dict[str, int], capacity: int) -> _ReadoutSink:
        sinks.append(_ReadoutSink(readouts, capacity))
        return sinks[0]

    stream_outputs(
        forward.model,
        forward.loader(),
        list(readouts),
        sink,
        forward.device,
        forward.progress,
        precision=forward.precision,
    )
    return sinks[0].out


def ablation_rows(
    forward: Forward,
    draws: Draws,
    ablated: LayerInfo,
    later: Sequence[LayerInfo],
    ablation: Ablation,
    placement: Placement = Placement(),
) -> list[dict]:
    """Thesis Table 5.4: zero the top-VIP neurons of ``ablated`` and re-probe every later layer.

    For each attribute the ablated layer's VIP comes from its own layer probe, fitted on the train draw
    (the layer alone is extracted, or read from the store the model's probe units wrote); the top
    ``fraction`` of its neurons are zeroed inside the forward pass, the later layers re-extracted for that
    attribute's images and probed again (whole layer, top-k channels, top-k neurons) and compared with the
    unablated accuracy of the same probe on the same split (``ablation.baseline``, the probe units' rows): a
    validation row with the validation baseline, a test row with the test baseline (thesis section 5.3: the
    drop is measured where the probe is scored). Without a store in ``placement`` the layers are held in
    RAM; with one each ablated pass goes through a store of its own next to the clean one, keyed by the
    zeroed neurons and the attribute's train images and deleted once probed, so memory stays bounded by the
    batch however many later layers there are. When ``placement`` streams layers, every layer, the ablated
    one included, is streamed instead (:func:`probe_group`): nothing is held or stored.
    """
    settings = Settings(ablation.top_k, ablation.components)
    storage, stream = placement.storage, bool(placement.streamed)
    evaluation = draws.evaluation_images(ablation.attributes, forward.images)
    fitted_rows = attribute_rows(draws, [*forward.images, *evaluation], ablation.attributes)

    def fit_clean(X: Any) -> LayerFit:
        return fit_layer(X, ablated.shape, fitted_rows, settings.k, settings.n_components)

    if stream:
        clean = _streamed(forward, [ablated], lambda name, X: fit_clean(X))[ablated.name]
    else:
        source = _activations(forward, [ablated], Placement(storage))
        clean = source.probe(ablated, fit_clean)
        del source
    rows = []
    vips = {a: fit.vip for a, fit in clean.fits.items() if not isinstance(fit, ProbeInputError)}
    del clean  # every attribute's fitted probes of the ablated layer: only their VIP is needed now
    for attribute, vip in vips.items():
        order = np.argsort(-vip, kind="stable")
        mine = forward.over(draws.train_images([attribute]))
        for fraction in ablation.fractions:
            neurons = order[: max(1, math.ceil(fraction * vip.size))]
            hit_storage = _ablated_storage(storage, ablated, neurons, mine.images)
            streamed = frozenset(info.name for info in later) if stream else frozenset()
            with ablate(forward.model, ablated.name, neurons=neurons):  # also for a re-extraction
                hit = Placement(hit_storage, streamed, placement.fit_bytes, placement.cuts)
                probed = probe_group(mine, draws, [attribute], later, settings, hit)
            if hit_storage is not None:
                shutil.rmtree(hit_storage.store.path)
            for info in later:
                for row in probed[info.name].rows:
                    if row["metric"] == "mae":  # a drop is read in the headline metric (R^2 for a value)
                        continue
                    before = ablation.baseline.get(
                        (info.name, attribute, row["representation"], row["split"]), np.nan
                    )
                    rows.append(
                        {
                            "ablated_layer": ablated.name,
                            "ablated_depth": ablated.depth,
                            "fraction": fraction,
                            "n_ablated": len(neurons),
                            "attribute": attribute,
                            "layer": info.name,
                            "depth": info.depth,
                            "representation": row["representation"],
                            "split": row["split"],
                            "accuracy": row["accuracy"],
                            "baseline_accuracy": before,
                            "drop": before - row["accuracy"],
                        }
                    )
    return rows


def _ablated_storage(
    storage: Storage | None, ablated: LayerInfo, neurons: np.ndarray, images: Sequence[str]
) -> Storage | None:
    """A store of its own for one ablated pass, next to the clean one, keyed by what it zeroes."""
    if storage is None:
        return None
    key = storage.store.key
    zeroed = {"layer": ablated.name, "neurons": hashlib.sha256(neurons.tobytes()).hexdigest()}
    hit_key = {**store_key(key["model"], key["weights"], key["preprocessing"], images), "ablated": zeroed}
    store = ActivationStore.open(storage.store.path.parent / "ablated", hit_key, storage.store.batch_size)
    return Storage(store, storage.dtype)
