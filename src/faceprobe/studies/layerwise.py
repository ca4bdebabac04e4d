"""Layerwise and fine-grained probing of one layer (thesis sections 4.1, 4.2 and 5.3).

For each attribute, a PLS + QDA probe is fitted on the whole layer output; its VIP scores then pick the
top-k neurons and the top-k channels (mean VIP of a channel's neurons), which are probed again: the channels
through PLS + QDA, the neurons straight into QDA. Optionally each of those units is probed alone (the best
single channel and neuron of Table 5.2), and a VIP study samples neurons uniformly over the VIP range and
probes each alone (Fig. 5.9). Every probe is fitted on the train draw and scored on the validation draw and,
when given, on the test split.

Layers without spatial extent (fc, embedding, 1x1-pooled outputs) have no channels: a "channel" there is a
neuron, so, as in the thesis (section 5.2: the channel curves stop where outputs become one-dimensional),
they get no channel or channels rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceprobe.errors import ProbeInputError
from faceprobe.pls import (
    _DEFAULT_BLOCK_BYTES,
    PLS,
    _RowBlocks,
    channel_columns,
    fit_shared,
    top_k_channels,
    top_k_neurons,
    transform_shared,
)
from faceprobe.probe import Probe
from faceprobe.studies.units import sample_by_vip, single_unit_accuracies

__all__ = ["AttributeRows", "LayerProbes", "has_channels", "probe_layer", "split_rows"]

_EMPTY = np.zeros(0, dtype=np.intp)
#: Largest matrix of units read from a stored layer in one pass (the units of several attributes).
_UNITS_BYTES = 256 * 2**20


def has_channels(shape: tuple[int, ...]) -> bool:
    """Whether a layer of output ``shape`` (C, H, W) has channels of more than one neuron each."""
    return len(shape) > 1 and int(np.prod(shape[1:])) > 1


@dataclass(frozen=True)
class AttributeRows:
    """Rows of the union matrix used to fit and evaluate one attribute's probes, with their 0/1 labels."""

    train: NDArray[np.intp]
    val: NDArray[np.intp]
    y_train: NDArray
    y_val: NDArray
    test: NDArray[np.intp] = field(default_factory=lambda: _EMPTY)
    y_test: NDArray = field(default_factory=lambda: _EMPTY)

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
    """Probe one layer output X (union images x features, C,H,W order) for every attribute.

    X may be an in-memory array or an on-disk one (a zarr array of the activation store): the whole layer is
    only ever read in row blocks. The layer probes of all attributes share each pass over X
    (:func:`faceprobe.pls.fit_shared`, each attribute's train draw a row mask) and one more pass projects
    every evaluation image; the units each attribute's VIP picks are then read once into a small in-memory
    matrix, and every finer probe runs on that.

    Result rows have keys attribute, representation ("layer", "channels", "neurons", and with
    ``single_units`` "channel"/"neuron" with their ``unit``), k, split, accuracy, n_train, n_eval, note. A
    probe that cannot run (constant output, too few samples) gets NaN accuracy and the reason in ``note``
    instead of stopping the run. With ``vip_study`` > 0 that many neurons per attribute are sampled
    uniformly over the VIP range and probed alone. The :class:`LayerProbes` also keeps each attribute's VIP
    (the ablation study zeroes by it).
    """
    out = LayerProbes()
    layer_fits = _layer_pls(X, attributes, n_components)
    projections = _project(X, layer_fits)
    picks = {
        attribute: _Picks.of(
            pls.vip_, shape, k, vip_study, np.random.default_rng([seed, zlib.crc32(attribute.encode())])
        )
        for attribute in attributes
        if isinstance(pls := layer_fits[attribute], PLS)
    }
    units: dict[str, tuple[NDArray, Sequence[NDArray]]] = {}
    for attribute, sel in attributes.items():
        pls = layer_fits[attribute]
        if isinstance(pls, ProbeInputError):  # no fitted layer probe, so no VIP to pick units by
            failed = {split: {"accuracy": np.nan, "note": str(pls)} for split in sel.evaluations()}
            for representation in ("layer", "channels", "neurons"):
                if representation != "channels" or has_channels(shape):
                    out.rows += _rows(attribute, sel, representation, 0, failed)
            continue
        out.vips[attribute] = pls.vip_
        if attribute not in units:
            units |= _read_units(X, shape, picks, attribute)
        values, positions = units.pop(attribute)
        rows, vip_rows = _attribute_probes(
            attribute,
            sel,
            pls,
            projections[attribute],
            picks[attribute],
            values,
            positions,
            n_components,
            single_units,
        )
        out.rows += rows
        out.vip_rows += vip_rows
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


def _rows(
    attribute: str, sel: AttributeRows, representation: str, k: int, scores: dict[str, dict], unit: int = -1
) -> list[dict]:
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
            **score,
        }
        for split, score in scores.items()
    ]


def _attribute_probes(
    attribute: str,
    sel: AttributeRows,
    pls: PLS,
    projection: NDArray,
    picks: _Picks,
    values: NDArray,
    positions: Sequence[NDArray],
    n_components: int,
    single_units: bool,
) -> tuple[list[dict], list[dict]]:
    """One attribute's probes once its layer PLS is fitted and its units read: the layer, its top units,
    the VIP study. ``values`` holds the units of X read for it (and maybe for others); ``positions`` are its
    channel, neuron and sampled columns there."""
    evals = sel.evaluations()
    layer_scores = _fit_and_score(
        Probe(None),
        pls.x_scores_,
        _train_labels(sel),
        {split: (projection[rows], y) for split, (rows, y) in evals.items()},
    )
    rows = _rows(attribute, sel, "layer", 0, layer_scores)
    vip = pls.vip_
    channels, neurons, sampled = picks.channels, picks.neurons, picks.sampled
    channel_cols, neuron_cols, sampled_cols = positions
    U_train = values[sel.train]
    U_evals = {split: (values[r], y) for split, (r, y) in evals.items()}

    def probe_units(columns: NDArray, n: int | None) -> dict[str, dict]:
        picked = {split: (U[:, columns], y) for split, (U, y) in U_evals.items()}
        return _fit_and_score(Probe(n), U_train[:, columns], sel.y_train, picked)

    if len(channels):
        rows += _rows(
            attribute,
            sel,
            "channels",
            len(channels),
            probe_units(channel_cols, min(n_components, len(channel_cols))),
        )
    rows += _rows(attribute, sel, "neurons", len(neurons), probe_units(neuron_cols, None))
    if single_units:
        per_channel = len(channel_cols) // max(1, len(channels))
        for i, channel in enumerate(channels):
            cols = channel_cols[i * per_channel : (i + 1) * per_channel]
            scores = probe_units(cols, min(n_components, len(cols)))
            rows += _rows(attribute, sel, "channel", 1, scores, unit=int(channel))
        singles = _singles(U_train, sel.y_train, U_evals, neuron_cols)
        for i, neuron in enumerate(neurons):
            scores = {split: {"accuracy": acc[i], "note": ""} for split, acc in singles.items()}
            rows += _rows(attribute, sel, "neuron", 1, scores, unit=int(neuron))
    vip_rows = []
    if len(sampled):
        accuracy = _singles(U_train, sel.y_train, {"val": U_evals["val"]}, sampled_cols)["val"]
        positives = U_train[:, sampled_cols][sel.y_train == 1]
        vip_rows = [
            {
                "attribute": attribute,
                "neuron": int(neuron),
                "vip": float(vip[neuron]),
                "accuracy": float(accuracy[i]),
                "mean_positive": float(positives[:, i].mean()),
                "n_train": len(sel.train),
                "n_eval": len(sel.val),
            }
            for i, neuron in enumerate(sampled)
        ]
    return rows, vip_rows


def _layer_pls(
    X: Any, attributes: Mapping[str, AttributeRows], n_components: int
) -> dict[str, PLS | ProbeInputError]:
    """Every attribute's layer PLS, fitted together: one pass over X per component serves them all.

    An attribute's train draw is a row mask on the union matrix; the PLS sees those rows in union order,
    which is why :func:`_train_labels` gives the labels in that order too. Attributes whose train draw is
    too small for ``n_components`` get fewer components (fitted in their own shared group).
    """
    n, m = (int(s) for s in X.shape)
    wanted = {a: max(1, min(n_components, m, len(sel.train) - 1)) for a, sel in attributes.items()}
    fits: dict[str, PLS | ProbeInputError] = {}
    for components in sorted(set(wanted.values())):
        group = [a for a, c in wanted.items() if c == components]
        masks = np.zeros((n, len(group)), dtype=bool)
        Y = np.zeros((n, len(group)), dtype=np.float64)
        for j, attribute in enumerate(group):
            sel = attributes[attribute]
            masks[sel.train, j] = True
            Y[sel.train, j] = sel.y_train
        try:
            fitted: list[PLS | ProbeInputError] = fit_shared(X, Y, masks, components)
        except ProbeInputError as err:  # the layer itself is unusable (NaN or inf): every attribute says so
            fitted = [err] * len(group)
        fits.update(zip(group, fitted, strict=True))
    return fits


def _train_labels(sel: AttributeRows) -> NDArray:
    """The train labels in union-row order, the order in which :func:`_layer_pls` saw the rows."""
    return np.asarray(sel.y_train)[np.argsort(sel.train, kind="stable")]


def _project(X: Any, fits: Mapping[str, PLS | ProbeInputError]) -> dict[str, NDArray]:
    """Every fitted attribute's PLS scores for all rows of X, in one pass."""
    fitted = {a: pls for a, pls in fits.items() if isinstance(pls, PLS)}
    return dict(zip(fitted, transform_shared(X, list(fitted.values())), strict=True)) if fitted else {}


def _read_units(
    X: Any, shape: tuple[int, ...], picks: Mapping[str, _Picks], first: str
) -> dict[str, tuple[NDArray, list[NDArray]]]:
    """The columns of X that ``first`` and the attributes after it pick, as (values, positions) per attribute.

    ``positions`` are the attribute's channel, neuron and sampled columns within ``values``. An in-memory X
    is indexed for ``first`` alone; any other X costs a pass to read, so it is read once for as many of the
    following attributes as ``_UNITS_BYTES`` holds (at least ``first``), the values shared among them.
    """
    names = list(picks)
    requested: dict[str, tuple[NDArray, NDArray, NDArray]] = {}
    wanted = _EMPTY
    for attribute in names[names.index(first) :]:
        if requested and isinstance(X, np.ndarray):
            break
        columns = picks[attribute].columns(shape)
        union = np.union1d(wanted, np.concatenate(columns)).astype(np.intp)
        if requested and X.shape[0] * union.size * 4 > _UNITS_BYTES:
            break
        requested[attribute], wanted = columns, union
    values = _read_columns(X, wanted)
    return {
        a: (values, [np.searchsorted(wanted, np.asarray(c, dtype=np.intp)) for c in columns])
        for a, columns in requested.items()
    }


def _read_columns(X: Any, columns: NDArray[np.intp]) -> NDArray[np.float32]:
    """``X[:, columns]`` in float32; a stored X is read in one pass of row blocks."""
    if isinstance(X, np.ndarray):
        return np.asarray(X[:, columns], dtype=np.float32)
    out = np.empty((X.shape[0], len(columns)), dtype=np.float32)
    for rows, block in _RowBlocks(X, _DEFAULT_BLOCK_BYTES):
        np.take(block, columns, axis=1, out=out[rows])
    return out


def _fit_and_score(
    probe: Probe, X_train: NDArray, y_train: NDArray, evals: dict[str, tuple[NDArray, NDArray]]
) -> dict[str, dict]:
    try:
        probe.fit(X_train, y_train)
        return {split: {"accuracy": probe.score(X, y), "note": ""} for split, (X, y) in evals.items()}
    except ProbeInputError as err:
        return {split: {"accuracy": np.nan, "note": str(err)} for split in evals}


def _singles(X_train: NDArray, y_train: NDArray, evals: dict, neurons: NDArray) -> dict[str, NDArray]:
    """Accuracy of each neuron probed alone (1-D QDA), per evaluation split."""
    cols = np.asarray(neurons)
    return dict(
        zip(
            evals,
            single_unit_accuracies(X_train[:, cols], y_train, [(X[:, cols], y) for X, y in evals.values()]),
            strict=True,
        )
    )


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
