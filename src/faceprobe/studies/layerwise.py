"""Layerwise and fine-grained probing of one layer (thesis sections 4.1 and 4.2).

For each attribute, a PLS + QDA probe is fitted on the whole layer output; its VIP scores then pick the
top-k neurons and the top-k channels (mean VIP of a channel's neurons), which are probed again: the channels
through PLS + QDA, the neurons straight into QDA. Validation accuracy is the measure of each representation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from faceprobe.errors import ProbeInputError
from faceprobe.pls import channel_columns, top_k_channels, top_k_neurons
from faceprobe.probe import Probe

__all__ = ["AttributeRows", "probe_layer", "split_rows"]


@dataclass(frozen=True)
class AttributeRows:
    """Rows of the union matrix used to fit and evaluate one attribute's probes, with their 0/1 labels."""

    train: NDArray[np.intp]
    val: NDArray[np.intp]
    y_train: NDArray
    y_val: NDArray


def probe_layer(
    X: NDArray,
    shape: tuple[int, ...],
    attributes: Mapping[str, AttributeRows],
    k: int = 8,
    n_components: int = 8,
) -> list[dict]:
    """Probe one layer output X (union images x features, C,H,W order) for every attribute.

    Returns one dict per (attribute, representation) with keys attribute, representation ("layer",
    "channels", "neurons"), k, split, accuracy, n_train, n_eval, note. A layer the probe cannot use (constant
    output, too few features) gets NaN accuracy and the reason in ``note`` instead of stopping the run.
    """
    rows = []
    for attribute, sel in attributes.items():
        base = {"attribute": attribute, "split": "val", "n_train": len(sel.train), "n_eval": len(sel.val)}
        X_train, X_val = X[sel.train], X[sel.val]
        layer = Probe(min(n_components, X.shape[1], len(sel.train) - 1))
        scored = _score(layer, X_train, X_val, sel)
        rows.append({**base, "representation": "layer", "k": 0, **scored})
        if scored["note"]:  # without a fitted layer probe there are no VIP scores to pick units by
            rows += [{**base, "representation": r, "k": 0, **scored} for r in ("channels", "neurons")]
            continue
        vip = layer.pls_.vip_
        channels = top_k_channels(vip, shape, k)
        columns = channel_columns(channels, shape)
        rows.append(
            {
                **base,
                "representation": "channels",
                "k": len(channels),
                **_score(Probe(min(n_components, len(columns))), X_train[:, columns], X_val[:, columns], sel),
            }
        )
        neurons = top_k_neurons(vip, k)
        rows.append(
            {
                **base,
                "representation": "neurons",
                "k": len(neurons),
                **_score(Probe(None), X_train[:, neurons], X_val[:, neurons], sel),
            }
        )
    return rows


def _score(probe: Probe, X_train: NDArray, X_val: NDArray, sel: AttributeRows) -> dict:
    try:
        return {"accuracy": probe.fit(X_train, sel.y_train).score(X_val, sel.y_val), "note": ""}
    except ProbeInputError as err:
        return {"accuracy": np.nan, "note": str(err)}


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
