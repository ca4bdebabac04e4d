"""Layerwise and fine-grained probing of one layer (thesis sections 4.1, 4.2 and 5.3).

For each attribute, a PLS + QDA probe is fitted on the whole layer output; its VIP scores then pick the
top-k neurons and the top-k channels (mean VIP of a channel's neurons), which are probed again: the channels
through PLS + QDA, the neurons straight into QDA. Optionally each of those units is probed alone (the best
single channel and neuron of Table 5.2), and a VIP study samples neurons uniformly over the VIP range and
probes each alone (Fig. 5.9). Every probe is fitted on the train draw and scored on the validation draw and,
when given, on the test split.

Beyond the thesis, on purpose (its section on future work names multi-class and regression targets): an
attribute may be a multi-class or a continuous target (:mod:`faceprobe.targets`). The same probes are fitted
with the classifier swapped: PLS-DA (PLS2 on the one-hot classes, shared with every other attribute's PLS
in :func:`faceprobe.pls.fit_shared`) + QDA, scored by balanced accuracy; PLS regression with a linear
read-out of the scores (or of the top-k neurons, or of one unit), scored by R^2 and by the mean absolute
error. VIP, and so the top-k channels and neurons and the VIP study, follow from the PLS of every kind.

Layers without spatial extent (fc, embedding, 1x1-pooled outputs) have no channels: a "channel" there is a
neuron, so, as in the thesis (section 5.2: the channel curves stop where outputs become one-dimensional),
they get no channel or channels rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from faceprobe.errors import ProbeInputError
from faceprobe.pls import (
    MIN_STATE_BYTES,
    PLS,
    SharedFit,
    _RowBlocks,
    channel_columns,
    fit_transform_shared,
    one_blas_thread,
    top_k_channels,
    top_k_neurons,
    usable_cpus,
)
from faceprobe.probe import MulticlassProbe, Probe, RegressionProbe
from faceprobe.studies.units import sample_by_vip, single_unit_scores
from faceprobe.targets import METRICS

__all__ = [
    "AttributeRows",
    "LayerFit",
    "LayerProbes",
    "Readout",
    "fit_layer",
    "has_channels",
    "probe_layer",
    "split_rows",
    "unit_fit_threads",
    "unit_matrices_at_once",
]

_EMPTY = np.zeros(0, dtype=np.intp)
#: Largest matrix of units read from a layer in one pass (the units of several attributes); the attributes
#: then hold their own columns of it on their own rows, less again, until their unit probes are fitted.
UNITS_BYTES = 256 * 2**20
#: Row blocks of a pass that reads units (:func:`_read_columns`): few, large reads of a stored layer.
_UNIT_READ_BLOCK_BYTES = 64 * 2**20


def has_channels(shape: tuple[int, ...]) -> bool:
    """Whether a layer of output ``shape`` (C, H, W) has channels of more than one neuron each."""
    return len(shape) > 1 and int(np.prod(shape[1:])) > 1


@dataclass(frozen=True)
class AttributeRows:
    """Rows of the union matrix used to fit and evaluate one attribute's probes, with their labels: 0/1
    (``kind`` binary), class codes (multiclass) or values (continuous)."""

    train: NDArray[np.intp]
    val: NDArray[np.intp]
    y_train: NDArray
    y_val: NDArray
    test: NDArray[np.intp] = field(default_factory=lambda: _EMPTY)
    y_test: NDArray = field(default_factory=lambda: _EMPTY)
    kind: str = "binary"

    @property
    def metrics(self) -> tuple[str, ...]:
        """What its probes are scored by (results' ``metric``), the headline first."""
        return METRICS[self.kind]  # type: ignore[index]

    def evaluations(self) -> dict[str, tuple[NDArray[np.intp], NDArray]]:
        splits = {"val": (self.val, self.y_val)}
        if len(self.test):
            splits["test"] = (self.test, self.y_test)
        return splits


@dataclass
class LayerProbes:
    """What probing one layer produced: result rows, VIP-study rows, and each attribute's VIP scores."""

    rows: list[dict] = field(default_factory=list)
    vip_rows: list[dict] = field(default_factory=list)
    vips: dict[str, NDArray] = field(default_factory=dict)


def probe_layer(
    X: Any,
    shape: tuple[int, ...],
    attributes: Mapping[str, AttributeRows],
    k: int = 8,
    n_components: int = 8,
    single_units: bool = False,
    vip_study: int = 0,
    seed: int = 0,
) -> LayerProbes:
    """Probe one layer output X (images x features, C,H,W order) for every attribute: fit, then score.

    Every row an attribute uses (train and evaluation) is a row of X here; :func:`fit_layer` and
    :meth:`LayerFit.score` split the same work for callers whose evaluation images are not in X.
    """
    return fit_layer(X, shape, attributes, k, n_components, single_units, vip_study, seed).score()


def fit_layer(
    X: Any,
    shape: tuple[int, ...],
    attributes: Mapping[str, AttributeRows],
    k: int = 8,
    n_components: int = 8,
    single_units: bool = False,
    vip_study: int = 0,
    seed: int = 0,
    max_bytes: int | None = None,
) -> LayerFit:
    """Fit every probe of one layer on the train rows of X, for every attribute (thesis sections 4.1-4.2).

    X may be an in-memory array or an on-disk one (a zarr array of the activation store): it is only ever
    read in row blocks. The layer PLS of all attributes share each pass over X
    (:func:`faceprobe.pls.fit_transform_shared`, each attribute's train draw a row mask), and the same
    passes give their scores on each attribute's evaluation rows inside X. The units each attribute's VIP
    picks (top-k channels and neurons, the VIP study's sample) are then read on its train rows into a
    small matrix (gathered from X in memory, or read for several attributes in one pass over any other X),
    and their probes fitted on it, attributes on as many threads as CPUs (their readouts registered in the
    attributes' order, so results do not depend on the threads). Last, the fitted unit probes read out
    each attribute's evaluation rows inside X, from X, a few rows at a time (:func:`_read_known`): those
    rows are never held as a matrix of units, however many there are.

    Rows of ``attributes`` index X's rows, then rows that follow them: evaluation images outside X, whose
    readouts come later (:meth:`LayerFit.score`). Every train row must be a row of X. ``max_bytes`` bounds
    the working memory of the layer PLS (:func:`faceprobe.pls.fit_transform_shared`; None: its default),
    and then of the unit probes: fewer attributes are fitted at once when their unit matrices would not
    fit in it (:func:`unit_fit_threads`).
    """
    n_rows = int(X.shape[0])
    beyond = [a for a, sel in attributes.items() if len(sel.train) and sel.train.max() >= n_rows]
    if beyond:
        raise ProbeInputError(f"train rows of {', '.join(beyond)} lie outside X ({n_rows} rows)")
    shared = _layer_pls(X, attributes, n_components, max_bytes)
    readout = Readout()
    fits: dict[str, _AttributeFit | ProbeInputError] = {}
    layer_fits: dict[str, PLS | ProbeInputError] = {}
    picks = {}
    for attribute, fit in shared.items():
        layer_fits[attribute] = fit if isinstance(fit, ProbeInputError) else fit.model
        if isinstance(fit, SharedFit):
            rng = np.random.default_rng([seed, zlib.crc32(attribute.encode())])
            picks[attribute] = _Picks.of(fit.model.vip_, shape, k, vip_study, rng)
            readout.project(("layer", attribute), fit.model)
    units: dict[str, _Units] = {}
    pending: dict[str, Future[tuple[_AttributeFit, _ReadoutEntries]]] = {}
    widest = max((len(attributes[a].train) * p.width(shape) * 4 for a, p in picks.items()), default=0)
    threads = unit_fit_threads(widest, max_bytes)
    settings = (n_components, single_units)
    in_memory = isinstance(X, np.ndarray)

    def fit_units(attribute: str, unit_values: _Units) -> tuple[_AttributeFit, _ReadoutEntries]:
        sel, pls = attributes[attribute], layer_fits[attribute]
        fit, entries = _AttributeFit.fitted(
            attribute, sel, pls, picks[attribute], unit_values, shape, settings
        )
        if in_memory:  # its evaluation rows are read out here, beside the other attributes' fits
            _read_known(X, [entries])
        return fit, entries

    with one_blas_thread(), ThreadPoolExecutor(threads) as pool:
        for attribute in attributes:
            pls = layer_fits[attribute]
            if isinstance(pls, ProbeInputError):  # no fitted layer probe, so no VIP to pick units by
                fits[attribute] = pls
                continue
            if attribute not in units:  # read more units once the fits queued so far are under way
                _wait_until_running(pending.values(), threads)
                units |= _read_units(X, shape, picks, attributes, attribute)
            pending[attribute] = pool.submit(fit_units, attribute, units.pop(attribute))
        readouts = []
        for attribute, done in pending.items():  # registered in the attributes' order: the same readout
            fits[attribute], entries = done.result()
            entries.into(readout)
            readouts.append(entries)
        if not in_memory:
            _read_known(X, readouts)
    known = np.full((n_rows, readout.width), np.nan, dtype=np.float32)
    for attribute, fit in shared.items():
        if isinstance(fit, SharedFit):
            known[fit.rows, readout.slices[("layer", attribute)]] = fit.scores
    for entries in readouts:
        entries.fill(readout, known)
    fits = {attribute: fits[attribute] for attribute in attributes}
    return LayerFit(shape, dict(attributes), fits, readout, known)


def _wait_until_running(futures: Iterable[Future], limit: int) -> None:
    """Wait until at most ``limit`` of ``futures`` are unfinished (their units are then being fitted, not
    waiting in memory)."""
    unfinished = [f for f in futures if not f.done()]
    while len(unfinished) > limit:
        wait(unfinished, return_when=FIRST_COMPLETED)
        unfinished = [f for f in unfinished if not f.done()]


def unit_fit_threads(matrix_bytes: int = 0, max_bytes: int | None = None) -> int:
    """Attributes whose unit probes are fitted at once: their many small PLS fits are mostly
    single-threaded passes over a few channels, so one per CPU this process may run on, at most
    :data:`_MAX_UNIT_FIT_THREADS` (a wider fit splits its own passes between threads too); fewer when
    their unit matrices (``matrix_bytes`` each, at most) would not fit at once
    (:func:`unit_matrices_at_once`) in the layer PLS's budget ``max_bytes``, or in the least a fit is
    given (:data:`~faceprobe.pls.MIN_STATE_BYTES`); one at the least."""
    threads = min(usable_cpus(), _MAX_UNIT_FIT_THREADS)
    if max_bytes is None or matrix_bytes <= 0:
        return threads
    budget = max(max_bytes, MIN_STATE_BYTES)
    return max(1, min(threads, (budget // matrix_bytes - 2) // 2))


_MAX_UNIT_FIT_THREADS = 8


def unit_matrices_at_once(threads: int) -> int:
    """How many attributes' unit matrices (the columns its picks read, on its train rows) one layer's fit
    holds at once with ``threads`` fitting threads, at most: each fitting thread's, with the copy of its
    channels that its channel PLS reads; the next attribute's, read while they fit; and, from a layer not
    in RAM, the read they come from."""
    return 2 * threads + 2


#: Rows of one attribute's evaluation images inside X read out together after its fits: their values on
#: its picked columns, a matrix of at most this size (or one row). The same rows wherever X is, so the
#: same products and the same readouts.
KNOWN_ROWS_BYTES = 16 * 2**20


class _ReadoutEntries:
    """What one attribute's probes will need from the :class:`Readout`, collected while they are fitted
    (possibly in a thread of their own) and added to the layer's readout in a fixed order afterwards; and
    the readouts of its unit parts on its evaluation rows that are rows of X (``known_rows``), computed
    after the fits from X's ``columns`` (its picks, sorted), a batch of rows at a time
    (:func:`_read_known`)."""

    def __init__(self, columns: NDArray[np.intp], known_rows: NDArray[np.intp]) -> None:
        self.columns = columns
        self.known_rows = known_rows
        # (key, the PLS and its projection or None for raw neurons, X's columns, their positions)
        self._entries: list[tuple[tuple, PLS | None, tuple[NDArray, NDArray] | None, NDArray, NDArray]] = []
        self._known: dict[tuple, NDArray[np.float32]] = {}

    def project(self, key: tuple, pls: PLS, columns: NDArray, at: NDArray[np.intp]) -> None:
        """``pls`` of some ``columns`` of X, at positions ``at`` of :attr:`columns`."""
        self._entries.append((key, pls, _projection(pls), columns, at))

    def gather(self, key: tuple, columns: NDArray, at: NDArray[np.intp]) -> None:
        self._entries.append((key, None, None, columns, at))

    def into(self, readout: Readout) -> None:
        for key, pls, _, columns, _ in self._entries:
            if pls is None:
                readout.gather(key, columns)
            else:
                readout.project(key, pls, columns)

    @property
    def batch_rows(self) -> int:
        """Known rows read out together (:data:`KNOWN_ROWS_BYTES`)."""
        return max(1, KNOWN_ROWS_BYTES // max(1, 4 * len(self.columns)))

    def read(self, batch: int, values: NDArray[np.float32]) -> None:
        """The parts' readouts of the ``batch``-th :attr:`batch_rows` known rows, from ``values``: X's
        :attr:`columns` on those rows."""
        start = batch * self.batch_rows
        for key, _, projection, _, at in self._entries:
            part = np.take(values, at, axis=1)
            if projection is not None:
                rotations, offset = projection
                part = part @ rotations - offset
            if key not in self._known:
                self._known[key] = np.empty((len(self.known_rows), part.shape[1]), dtype=np.float32)
            self._known[key][start : start + len(part)] = part

    def fill(self, readout: Readout, known: NDArray[np.float32]) -> None:
        """Write the parts' readouts of the known rows into ``known`` (rows of X x readout columns)."""
        for key, values in self._known.items():
            known[self.known_rows, readout.slices[key]] = values


def _read_known(X: Any, entries: Sequence[_ReadoutEntries]) -> None:
    """Each attribute's unit readouts of its evaluation rows inside X, from X, :attr:`_ReadoutEntries.
    batch_rows` rows at a time: an in-memory X is gathered where it is; any other X costs a pass over the
    blocks holding those rows, whose picked columns fill each attribute's batches as they come. Only a
    block and a batch per attribute are held, whatever the number of rows, and the batches are the same
    wherever X is."""
    if isinstance(X, np.ndarray):
        for entry in entries:
            for batch, start in enumerate(range(0, len(entry.known_rows), entry.batch_rows)):
                rows = entry.known_rows[start : start + entry.batch_rows]
                entry.read(batch, _gather(X, rows, entry.columns))
        return
    entries = [entry for entry in entries if len(entry.known_rows)]
    if not entries:
        return
    wanted = np.unique(np.concatenate([entry.columns for entry in entries])).astype(np.intp)
    at = [np.searchsorted(wanted, entry.columns) for entry in entries]
    batches = [np.empty((min(e.batch_rows, len(e.known_rows)), len(e.columns)), np.float32) for e in entries]
    blocks = _RowBlocks(X, _UNIT_READ_BLOCK_BYTES)
    picked = blocks.math.operand(wanted)
    block_values = np.empty((blocks.rows, len(wanted)), dtype=np.float32)
    for span, block in blocks.holding(np.unique(np.concatenate([entry.known_rows for entry in entries]))):
        taken = False
        for entry, columns, batch in zip(entries, at, batches, strict=True):
            rows = entry.known_rows
            first, last = (int(i) for i in np.searchsorted(rows, [span.start, span.stop]))
            if first == last:
                continue
            if not taken:
                blocks.math.take(block, picked, block_values[: span.stop - span.start])
                taken = True
            size = entry.batch_rows
            for start in range(first, last):  # rows, in batches of ``size`` over the attribute's known rows
                batch[start % size] = block_values[rows[start] - span.start].take(columns)
                if start % size == size - 1 or start == len(rows) - 1:
                    entry.read(start // size, batch[: start % size + 1])


class Readout:
    """What scoring one layer's fitted probes needs from an image: a few PLS scores and a few neurons.

    Each entry is a block of output columns under a key: the PLS scores ``(x[columns] - mean) @ rotations``
    of a fitted PLS, or raw neurons ``x[columns]``. A batch of a layer's outputs (a torch tensor, on
    whatever device produced it) becomes its few readout columns there, so evaluation images never need to
    be kept whole: the layer PLS of all attributes share one product with the batch.
    """

    def __init__(self) -> None:
        self.slices: dict[tuple, slice] = {}
        self._whole: list[tuple[NDArray, NDArray, slice]] = []  # PLS over every column of the layer
        self._parts: list[tuple[NDArray, NDArray | None, NDArray | None, slice]] = []
        self._cache: tuple[Any, ...] | None = None

    @property
    def width(self) -> int:
        return max((s.stop for s in self.slices.values()), default=0)

    def _add(self, key: tuple, width: int) -> slice:
        where = self.slices[key] = slice(self.width, self.width + width)
        self._cache = None
        return where

    def project(self, key: tuple, pls: PLS, columns: NDArray | None = None) -> None:
        """Add ``pls``'s scores of the layer's ``columns`` (None: the whole layer) under ``key``."""
        rotations, offset = _projection(pls)
        where = self._add(key, rotations.shape[1])
        if columns is None:
            self._whole.append((rotations, offset, where))
        else:
            self._parts.append((np.asarray(columns, dtype=np.int64), rotations, offset, where))

    def gather(self, key: tuple, columns: NDArray) -> None:
        """Add the layer's ``columns`` themselves under ``key``."""
        self._parts.append((np.asarray(columns, dtype=np.int64), None, None, self._add(key, len(columns))))

    def _whole_at(self) -> NDArray[np.intp]:
        """The readout columns of the layer-wide PLS scores."""
        return np.concatenate([np.arange(s.start, s.stop) for _, _, s in self._whole])

    def _tensors(self, device: torch.device) -> tuple[Any, ...]:
        if self._cache is None or self._cache[0] != device:
            whole = None
            if self._whole:
                rotations = np.concatenate([r for r, _, _ in self._whole], axis=1)
                offsets = np.concatenate([o for _, o, _ in self._whole])
                whole = tuple(torch.from_numpy(a).to(device) for a in (rotations, offsets, self._whole_at()))
            parts = [
                (*(None if a is None else torch.from_numpy(a).to(device) for a in part[:3]), part[3])
                for part in self._parts
            ]
            self._cache = (device, whole, parts)
        return self._cache

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        """The readout of a batch (images x layer features) as (images x width) float32, on its device."""
        block = block.flatten(1).float()
        _, whole, parts = self._tensors(block.device)
        out = torch.empty((block.shape[0], self.width), dtype=torch.float32, device=block.device)
        if whole is not None:
            rotations, offsets, at = whole
            out.index_copy_(1, at, block @ rotations - offsets)
        for columns, rotations, offset, where in parts:
            picked = block.index_select(1, columns)  # advanced indexing (block[:, columns]) is ~70x slower
            out[:, where] = picked if rotations is None else picked @ rotations - offset
        return out


def _projection(pls: PLS) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A fitted PLS's scores as ``x @ rotations - offset`` in float32: how every readout computes them."""
    rotations = pls.x_rotations_.astype(np.float32)
    return rotations, pls.x_mean_.astype(np.float32) @ rotations


@dataclass
class _AttributeFit:
    """One attribute's probes of a layer, fitted on its train rows, waiting for its evaluation rows.

    ``probes`` are (representation, k, unit, fitted QDA probe or why none, readout key); the single-neuron
    probes and the VIP study keep their train columns, since their 1-D QDA fits are vectorised at scoring.
    """

    probes: list[tuple[str, int, int, Probe | ProbeInputError, tuple]]
    vip: NDArray
    neurons: NDArray
    neuron_train: NDArray | None
    sampled: NDArray
    sampled_train: NDArray

    @classmethod
    def fitted(
        cls,
        attribute: str,
        sel: AttributeRows,
        pls: PLS,
        picks: _Picks,
        units: _Units,
        shape: tuple[int, ...],
        settings: tuple[int, bool],
    ) -> tuple[_AttributeFit, _ReadoutEntries]:
        """Fit the attribute's unit probes on the units read for it (its train rows), with what scoring
        will need from the readout and from X's rows (:class:`_ReadoutEntries`)."""
        n_components, single_units = settings
        readout = _ReadoutEntries(units.columns, units.known_rows)
        channel_at, neuron_at, sampled_at = units.positions
        channel_cols = picks.columns(shape)[0]
        probes = [("layer", 0, -1, _qda(pls.x_scores_, _train_labels(sel), sel.kind), ("layer", attribute))]

        def through_pls(key: tuple, at: NDArray, columns: NDArray) -> Probe | ProbeInputError:
            """PLS + QDA on some units: the PLS read out by its scores, QDA fitted on the train scores."""
            try:
                fitted = PLS(min(n_components, len(at))).fit(
                    np.take(units.train, at, axis=1), _pls_target(sel.kind, sel.y_train)
                )  # in row order: ``units.train[:, at]`` is column-ordered, and passes over it are slow
            except ProbeInputError as err:
                return err
            readout.project(key, fitted, columns, at)
            return _qda(fitted.x_scores_, sel.y_train, sel.kind)

        channels = picks.channels
        if len(channels):
            key = ("channels", attribute)
            probes.append(("channels", len(channels), -1, through_pls(key, channel_at, channel_cols), key))
        key = ("neurons", attribute)
        readout.gather(key, picks.neurons, neuron_at)
        neurons = _qda(units.train[:, neuron_at], sel.y_train, sel.kind)
        probes.append(("neurons", len(picks.neurons), -1, neurons, key))
        if single_units:
            per_channel = len(channel_at) // max(1, len(channels))
            for i, channel in enumerate(channels):
                part = slice(i * per_channel, (i + 1) * per_channel)
                key = ("channel", attribute, i)
                probes.append(
                    ("channel", 1, int(channel), through_pls(key, channel_at[part], channel_cols[part]), key)
                )
        if len(picks.sampled):
            readout.gather(("sampled", attribute), picks.sampled, sampled_at)
        fit = cls(
            probes,
            pls.vip_,
            picks.neurons,
            units.train[:, neuron_at] if single_units else None,
            picks.sampled,
            units.train[:, sampled_at],
        )
        return fit, readout

    def rows(self, attribute: str, sel: AttributeRows, evaluated: NDArray, readout: Readout) -> LayerProbes:
        """Score every probe on the attribute's evaluation rows of ``evaluated`` (readouts, one row per
        image of the layer's row order): result rows in the thesis's order, and the VIP study's rows."""
        evals = sel.evaluations()
        out = LayerProbes(vips={attribute: self.vip})

        def inputs(key: tuple) -> dict[str, tuple[NDArray, NDArray]]:
            return {split: (evaluated[rows, readout.slices[key]], y) for split, (rows, y) in evals.items()}

        for representation, k, unit, probe, key in self.probes:
            fitted = not isinstance(probe, ProbeInputError)  # an unfitted probe has no readout to score
            scores = _score(probe, inputs(key) if fitted else evals, sel.metrics)
            out.rows += _rows(attribute, sel, representation, k, scores, unit)
        if self.neuron_train is not None:
            singles = _singles(sel, self.neuron_train, inputs(("neurons", attribute)))
            for i, neuron in enumerate(self.neurons):
                scores = {
                    split: [_scored(metric, values[i]) for metric, values in by_metric.items()]
                    for split, by_metric in singles.items()
                }
                out.rows += _rows(attribute, sel, "neuron", 1, scores, unit=int(neuron))
        if len(self.sampled):
            headline = sel.metrics[0]
            score = _singles(sel, self.sampled_train, {"val": inputs(("sampled", attribute))["val"]})
            positives = self.sampled_train[sel.y_train == 1] if sel.kind == "binary" else None
            out.vip_rows = [
                {
                    "attribute": attribute,
                    "neuron": int(neuron),
                    "vip": float(self.vip[neuron]),
                    "accuracy": float(score["val"][headline][i]),
                    "mean_positive": np.nan if positives is None else float(positives[:, i].mean()),
                    "n_train": len(sel.train),
                    "n_eval": len(sel.val),
                    "metric": headline,
                }
                for i, neuron in enumerate(self.sampled)
            ]
        return out


@dataclass
class LayerFit:
    """One layer's probes fitted on the train rows, with the readouts of X's rows; scored by :meth:`score`.

    ``fits`` holds each attribute's fitted probes, or why its layer PLS could not be fitted.
    """

    shape: tuple[int, ...]
    attributes: dict[str, AttributeRows]
    fits: dict[str, _AttributeFit | ProbeInputError]
    readout: Readout
    known: NDArray[np.float32]

    def score(self, later: NDArray | None = None) -> LayerProbes:
        """Every probe's accuracy on its evaluation rows: X's rows from :attr:`known`, the rows after
        them from ``later`` (the readouts of evaluation images outside X, in row order)."""
        evaluated = self.known if later is None else np.concatenate([self.known, later])
        out = LayerProbes()
        for attribute, sel in self.attributes.items():
            fit = self.fits[attribute]
            if isinstance(fit, ProbeInputError):
                failed = _score(fit, sel.evaluations(), sel.metrics)
                for representation in ("layer", "channels", "neurons"):
                    if representation != "channels" or has_channels(self.shape):
                        out.rows += _rows(attribute, sel, representation, 0, failed)
                continue
            scored = fit.rows(attribute, sel, evaluated, self.readout)
            out.rows += scored.rows
            out.vip_rows += scored.vip_rows
            out.vips |= scored.vips
        return out


@dataclass(frozen=True)
class _Picks:
    """The units one attribute's VIP picks: its top channels and neurons, and the VIP study's sample."""

    channels: NDArray[np.intp]
    neurons: NDArray[np.intp]
    sampled: NDArray[np.intp]

    @classmethod
    def of(
        cls, vip: NDArray, shape: tuple[int, ...], k: int, vip_study: int, rng: np.random.Generator
    ) -> _Picks:
        sampled = sample_by_vip(vip, vip_study, rng) if vip_study else _EMPTY
        channels = top_k_channels(vip, shape, k) if has_channels(shape) else _EMPTY
        return cls(channels, top_k_neurons(vip, k), sampled)

    def columns(self, shape: tuple[int, ...]) -> tuple[NDArray, NDArray, NDArray]:
        """The columns of X each probe reads: the channels' neurons, the neurons, the sampled neurons."""
        return channel_columns(self.channels, shape), self.neurons, self.sampled

    def width(self, shape: tuple[int, ...]) -> int:
        """How many columns of X they read, at most (a neuron may be picked twice)."""
        return sum(len(c) for c in self.columns(shape))


def _rows(
    attribute: str,
    sel: AttributeRows,
    representation: str,
    k: int,
    scores: dict[str, list[dict]],
    unit: int = -1,
) -> list[dict]:
    """Result rows of one probe: one per split and metric (``scores[split]``: metric, accuracy, note)."""
    evals = sel.evaluations()
    return [
        {
            "attribute": attribute,
            "n_train": len(sel.train),
            "representation": representation,
            "k": k,
            "unit": unit,
            "split": split,
            "n_eval": len(evals[split][1]),
            "chance": _chance(sel, score["metric"], evals[split][1]),
            **score,
        }
        for split, per_metric in scores.items()
        for score in per_metric
    ]


def _layer_pls(
    X: Any, attributes: Mapping[str, AttributeRows], n_components: int, max_bytes: int | None = None
) -> dict[str, SharedFit | ProbeInputError]:
    """Every attribute's layer PLS, fitted together: one pass over X per component serves them all, and
    gives its scores on the attribute's evaluation rows inside X (:func:`_known_rows`).

    An attribute's train draw is a row mask on the union matrix; the PLS sees those rows in union order,
    which is why :func:`_train_labels` gives the labels in that order too. Attributes whose train draw is
    too small for ``n_components`` get fewer components (fitted in their own shared group).
    """
    n, m = (int(s) for s in X.shape)
    wanted = {a: max(1, min(n_components, m, len(sel.train) - 1)) for a, sel in attributes.items()}
    fits: dict[str, SharedFit | ProbeInputError] = {}
    for components in sorted(set(wanted.values())):
        group = [a for a, c in wanted.items() if c == components]
        masks = np.zeros((n, len(group)), dtype=bool)
        scored = np.zeros((n, len(group)), dtype=bool)
        targets = [_pls_target(attributes[a].kind, attributes[a].y_train) for a in group]
        widths = [t.shape[1] for t in targets]
        Y = np.zeros((n, sum(widths)), dtype=np.float64)
        for j, (attribute, target) in enumerate(zip(group, targets, strict=True)):
            sel = attributes[attribute]
            masks[sel.train, j] = True
            scored[_known_rows(sel, n), j] = True
            Y[sel.train, sum(widths[:j]) : sum(widths[: j + 1])] = target
        try:
            fitted: list[SharedFit | ProbeInputError] = fit_transform_shared(
                X, Y, masks, components, scored=scored, widths=widths, max_bytes=max_bytes
            )
        except ProbeInputError as err:  # the layer itself is unusable (NaN or inf): every attribute says so
            fitted = [err] * len(group)
        fits.update(zip(group, fitted, strict=True))
    return fits


def _train_labels(sel: AttributeRows) -> NDArray:
    """The train labels in union-row order, the order in which :func:`_layer_pls` saw the rows."""
    return np.asarray(sel.y_train)[np.argsort(sel.train, kind="stable")]


@dataclass(frozen=True)
class _Units:
    """The columns of X one attribute's picks read (``columns``, sorted): their values on its train rows,
    with each pick's columns within them (``positions``: channel, neuron and sampled columns); and its
    evaluation rows that are rows of X (``known_rows``), read out from X after the fits."""

    train: NDArray[np.float32]
    columns: NDArray[np.intp]
    positions: list[NDArray[np.intp]]
    known_rows: NDArray[np.intp]


def _known_rows(sel: AttributeRows, n_rows: int) -> NDArray[np.intp]:
    """The attribute's evaluation rows (every split) that are rows of X, sorted and unique."""
    rows = np.unique(np.concatenate([rows for rows, _ in sel.evaluations().values()]).astype(np.intp))
    return rows[rows < n_rows]


def _unit_batch(
    shape: tuple[int, ...],
    picks: Mapping[str, _Picks],
    attributes: Mapping[str, AttributeRows],
    first: str,
    n_rows: int,
) -> tuple[dict[str, tuple[NDArray, NDArray, NDArray]], NDArray[np.intp], NDArray[np.intp]]:
    """``first`` and the attributes after it whose picked columns on their train rows ``UNITS_BYTES``
    holds (at least ``first``), with their columns, and the unions of those columns and of those rows."""
    names = list(picks)
    requested: dict[str, tuple[NDArray, NDArray, NDArray]] = {}
    wanted, needed = _EMPTY, _EMPTY
    for attribute in names[names.index(first) :]:
        columns = picks[attribute].columns(shape)
        union = np.union1d(wanted, np.concatenate(columns)).astype(np.intp)
        rows = np.union1d(needed, attributes[attribute].train).astype(np.intp)
        if requested and rows.size * union.size * 4 > UNITS_BYTES:
            break
        requested[attribute], wanted, needed = columns, union, rows
    return requested, wanted, needed


def _units_from(
    values: NDArray,
    wanted: NDArray[np.intp],
    held: NDArray[np.intp] | None,
    requested: Mapping[str, tuple[NDArray, NDArray, NDArray]],
    attributes: Mapping[str, AttributeRows],
    n_rows: int,
) -> dict[str, _Units]:
    """Each requested attribute's units, taken from ``values``: X's ``wanted`` columns on X's rows ``held``
    (every row when None: X itself, in memory). Each attribute keeps its own columns only, on its own
    train rows."""
    units = {}
    for attribute, columns in requested.items():
        own = np.unique(np.concatenate(columns)).astype(np.intp)
        sel = attributes[attribute]
        train = sel.train if held is None else np.searchsorted(held, sel.train)  # as rows of ``values``
        taken = _gather(values, train, np.searchsorted(wanted, own))
        units[attribute] = _Units(taken, own, _positions(own, columns), _known_rows(sel, n_rows))
    return units


def _read_units(
    X: Any,
    shape: tuple[int, ...],
    picks: Mapping[str, _Picks],
    attributes: Mapping[str, AttributeRows],
    first: str,
) -> dict[str, _Units]:
    """The units of ``first``, and of the attributes after it when they come in one read.

    An in-memory X is indexed for ``first`` alone, on its train rows only; any other X costs a pass to
    read, so it is read once for as many of the following attributes as ``UNITS_BYTES`` holds on their
    train rows, and each attribute then takes its own rows.
    """
    n_rows = int(X.shape[0])
    if isinstance(X, np.ndarray):  # X holds every column: its rows are gathered where they are
        every = np.arange(X.shape[1], dtype=np.intp)
        return _units_from(X, every, None, {first: picks[first].columns(shape)}, attributes, n_rows)
    requested, wanted, rows = _unit_batch(shape, picks, attributes, first, n_rows)
    return _units_from(_read_columns(X, wanted, rows), wanted, rows, requested, attributes, n_rows)


def _read_columns(X: Any, columns: NDArray[np.intp], rows: NDArray[np.intp]) -> NDArray[np.float32]:
    """X's ``columns`` of its ``rows`` (increasing), in one pass of row blocks, picked where the blocks are:
    only those rows are held, whatever X's height, and only the blocks holding them are read."""
    values = np.empty((len(rows), len(columns)), dtype=np.float32)
    blocks = _RowBlocks(X, _UNIT_READ_BLOCK_BYTES)
    picked = blocks.math.operand(columns)
    block_values = np.empty((blocks.rows, len(columns)), dtype=np.float32)
    for span, block in blocks.holding(rows):
        first, last = np.searchsorted(rows, [span.start, span.stop])
        if first == last:
            continue
        height = span.stop - span.start
        if last - first == height:  # every row of the block: picked straight into place
            blocks.math.take(block, picked, values[first:last])
            continue
        blocks.math.take(block, picked, block_values[:height])
        values[first:last] = block_values[rows[first:last] - span.start]
    return values


def _gather(X: NDArray, rows: NDArray[np.intp], columns: NDArray[np.intp]) -> NDArray[np.float32]:
    """``X[np.ix_(rows, columns)]`` in float32, a row at a time: NumPy's index on both axes, or the rows
    and then the columns, took two to four times as long here."""
    out = np.empty((len(rows), len(columns)), dtype=np.float32)
    for i, row in enumerate(rows):
        out[i] = X[row].take(columns)
    return out


def _positions(wanted: NDArray[np.intp], columns: Sequence[NDArray]) -> list[NDArray[np.intp]]:
    return [np.searchsorted(wanted, np.asarray(c, dtype=np.intp)) for c in columns]


def _chance(sel: AttributeRows, metric: str, y: NDArray) -> float:
    """What a probe that learned nothing scores on labels ``y``: 0.5 (binary, balanced draws), 1 / classes
    of the train draw, R^2 0, or the MAE of predicting the train draw's mean."""
    if metric == "accuracy":
        return 0.5
    if metric == "balanced_accuracy":
        return 1.0 / max(2, len(np.unique(sel.y_train)))
    if metric == "r2":
        return 0.0
    return (
        float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - np.mean(sel.y_train)))) if len(y) else np.nan
    )


def _pls_target(kind: str, y: NDArray) -> NDArray[np.float64]:
    """What a PLS of this kind of target is fitted on, one column per target dimension: the 0/1 label or
    the value, or the one-hot classes (PLS-DA) of a multi-class target."""
    y = np.asarray(y)
    if kind != "multiclass":
        return y.astype(np.float64)[:, None]
    classes, codes = np.unique(y, return_inverse=True)
    return np.eye(max(2, len(classes)))[codes]


def _qda(Z: NDArray, y: NDArray, kind: str = "binary") -> Probe | RegressionProbe | ProbeInputError:
    """The read-out of a few inputs (PLS scores or units), fitted on the train rows, or why it cannot be:
    QDA (balanced accuracy for a multi-class target), or least squares for a continuous one."""
    reader = {"binary": Probe, "multiclass": MulticlassProbe, "continuous": RegressionProbe}[kind]
    try:
        if kind == "multiclass":
            y = np.asarray(y).astype(np.intp)
        return reader(None).fit(Z, y)
    except ProbeInputError as err:
        return err


def _scored(metric: str, value: float, note: str = "") -> dict:
    return {"metric": metric, "accuracy": float(value), "note": note}


def _score(
    probe: Probe | RegressionProbe | ProbeInputError,
    evals: dict[str, tuple[NDArray, NDArray]],
    metrics: Sequence[str] = ("accuracy",),
) -> dict[str, list[dict]]:
    """A fitted probe's scores per evaluation split (accuracy, balanced accuracy, or R^2 and MAE); NaN
    with the reason where it cannot score."""
    if isinstance(probe, ProbeInputError):
        return {split: [_scored(m, np.nan, str(probe)) for m in metrics] for split in evals}
    try:
        return {
            split: [_scored(m, probe.mae(X, y) if m == "mae" else probe.score(X, y)) for m in metrics]
            for split, (X, y) in evals.items()
        }
    except ProbeInputError as err:
        return {split: [_scored(m, np.nan, str(err)) for m in metrics] for split in evals}


def _singles(sel: AttributeRows, X_train: NDArray, evals: dict) -> dict[str, dict[str, NDArray]]:
    """Each column probed alone (1-D QDA, or 1-D least squares), per evaluation split and metric."""
    scores = single_unit_scores(sel.kind, X_train, sel.y_train, list(evals.values()))
    return dict(zip(evals, scores, strict=True))


def split_rows(y: NDArray, val_fraction: float, seed: int = 0) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A stratified train/validation split of row indices (both classes in both parts)."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 4:
        raise ProbeInputError(
            f"labels have {dict(zip(classes.tolist(), counts.tolist(), strict=True))} samples per class; "
            "a probe needs both classes with at least 4 samples each"
        )
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = min(len(rows) - 2, max(2, round(len(rows) * val_fraction)))
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
