"""Layerwise and fine-grained probing of one layer (thesis sections 4.1, 4.2 and 5.3).

For each attribute, a PLS + QDA probe is fitted on the whole layer output; its VIP scores then pick the
top-k neurons and the top-k channels (mean VIP of a channel's neurons), which are probed again: the channels
through PLS + QDA, the neurons straight into QDA. Optionally each of those units is probed alone (the best
single channel and neuron of Table 5.2), and a VIP study samples neurons uniformly over the VIP range and
probes each alone (Fig. 5.9). Every probe is fitted on the train draw and scored on the validation draw and,
when given, on the test split.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from faceprobe.errors import ProbeInputError
from faceprobe.pls import channel_columns, top_k_channels, top_k_neurons
from faceprobe.probe import Probe
from faceprobe.studies.units import sample_by_vip, single_unit_accuracies

__all__ = ["AttributeRows", "LayerProbes", "probe_layer", "split_rows"]

_EMPTY = np.zeros(0, dtype=np.intp)


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
    X: NDArray,
    shape: tuple[int, ...],
    attributes: Mapping[str, AttributeRows],
    k: int = 8,
    n_components: int = 8,
    single_units: bool = False,
    vip_study: int = 0,
    seed: int = 0,
    keep_vip: bool = False,
) -> list[dict] | LayerProbes:
    """Probe one layer output X (union images x features, C,H,W order) for every attribute.

    Result rows have keys attribute, representation ("layer", "channels", "neurons", and with
    ``single_units`` "channel"/"neuron" with their ``unit``), k, split, accuracy, n_train, n_eval, note. A
    probe that cannot run (constant output, too few samples) gets NaN accuracy and the reason in ``note``
    instead of stopping the run. With ``vip_study`` > 0 that many neurons per attribute are sampled
    uniformly over the VIP range and probed alone. Returns the rows alone unless a study or ``keep_vip``
    asks for more, then a :class:`LayerProbes`.
    """
    out = LayerProbes()
    for attribute, sel in attributes.items():
        X_train = X[sel.train]
        evals = {split: (X[rows], y) for split, (rows, y) in sel.evaluations().items()}
        base = {"attribute": attribute, "n_train": len(sel.train)}

        n_eval = {split: len(y) for split, (_, y) in evals.items()}

        def record(
            representation: str, k_: int, scores: dict[str, dict], unit: int = -1, base=base, n_eval=n_eval
        ):
            for split, score in scores.items():
                out.rows.append(
                    {
                        **base,
                        "representation": representation,
                        "k": k_,
                        "unit": unit,
                        "split": split,
                        "n_eval": n_eval[split],
                        **score,
                    }
                )

        layer = Probe(max(1, min(n_components, X.shape[1], len(sel.train) - 1)))
        scored = _fit_and_score(layer, X_train, sel.y_train, evals, columns=None)
        record("layer", 0, scored)
        if next(iter(scored.values()))["note"]:  # no fitted layer probe, so no VIP to pick units by
            for representation in ("channels", "neurons"):
                record(representation, 0, scored)
            continue
        vip = layer.pls_.vip_
        if keep_vip:
            out.vips[attribute] = vip
        channels = top_k_channels(vip, shape, k)
        columns = channel_columns(channels, shape)
        record(
            "channels",
            len(channels),
            _fit_and_score(Probe(min(n_components, len(columns))), X_train, sel.y_train, evals, columns),
        )
        neurons = top_k_neurons(vip, k)
        record("neurons", len(neurons), _fit_and_score(Probe(None), X_train, sel.y_train, evals, neurons))
        if single_units:
            for channel in channels:
                cols = channel_columns([channel], shape)
                record(
                    "channel",
                    1,
                    _fit_and_score(Probe(min(n_components, len(cols))), X_train, sel.y_train, evals, cols),
                    unit=int(channel),
                )
            singles = _singles(X_train, sel.y_train, evals, neurons)
            for i, neuron in enumerate(neurons):
                record(
                    "neuron",
                    1,
                    {split: {"accuracy": acc[i], "note": ""} for split, acc in singles.items()},
                    unit=int(neuron),
                )
        if vip_study:
            sampled = sample_by_vip(
                vip, vip_study, np.random.default_rng([seed, zlib.crc32(attribute.encode())])
            )
            accuracy = _singles(X_train, sel.y_train, {"val": evals["val"]}, sampled)["val"]
            positives = np.asarray(X_train[:, sampled], dtype=np.float64)[sel.y_train == 1]
            for i, neuron in enumerate(sampled):
                out.vip_rows.append(
                    {
                        "attribute": attribute,
                        "neuron": int(neuron),
                        "vip": float(vip[neuron]),
                        "accuracy": float(accuracy[i]),
                        "mean_positive": float(positives[:, i].mean()),
                        "n_train": len(sel.train),
                        "n_eval": len(sel.val),
                    }
                )
    return out if (vip_study or keep_vip) else out.rows


def _fit_and_score(
    probe: Probe,
    X_train: NDArray,
    y_train: NDArray,
    evals: dict[str, tuple[NDArray, NDArray]],
    columns: NDArray | None,
) -> dict[str, dict]:
    pick = (lambda A: A) if columns is None else (lambda A: A[:, columns])
    try:
        probe.fit(pick(X_train), y_train)
        return {split: {"accuracy": probe.score(pick(X), y), "note": ""} for split, (X, y) in evals.items()}
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
