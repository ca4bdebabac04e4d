"""What one work unit computes: probes for a group of layers of one model, or an ablation study.

A unit is self-contained: it gets the network, the preprocessing, the images and the draws, and returns
tidy rows. One forward pass per batch serves every layer of the group (the forward stops right after the
group's last layer), and every attribute shares that layer's activations: the union of all draws is
extracted once, and each attribute's train/validation/test draws are row sets of it.
"""

from __future__ import annotations

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

from faceprobe.extract import LayerInfo, extract
from faceprobe.extract.ablation import ablate
from faceprobe.extract.store import ActivationStore, CorruptStoreError, extract_to_store
from faceprobe.run.config import ProbeConfig
from faceprobe.studies.layerwise import AttributeRows, probe_layer

__all__ = ["Ablation", "Draws", "Forward", "Storage", "ablation_rows", "attribute_rows", "probe_rows"]


@dataclass(frozen=True)
class Draws:
    """The protocol's image sets: per attribute a train and a validation draw, plus the shared test images.

    ``table`` is tidy (attribute, split, image_id; split in train/val/test, test rows with attribute "*"),
    ``labels`` the 0/1 labels of every image used, per attribute (Control_Random included).
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
        labels = draws.labels[attribute]
        test = [i for i in test_ids if pd.notna(labels.get(i))]
        rows[attribute] = AttributeRows(
            train=position[parts["train"]].to_numpy(),
            val=position[parts["val"]].to_numpy(),
            y_train=labels.loc[parts["train"]].to_numpy(dtype=np.int8),
            y_val=labels.loc[parts["val"]].to_numpy(dtype=np.int8),
            test=position[test].to_numpy(),
            y_test=labels.loc[test].to_numpy(dtype=np.int8),
        )
    return rows


@dataclass(frozen=True)
class Forward:
    """A unit's network over its images: what every extraction of the unit shares.

    ``images`` are the union of the draws (each image once); ``progress`` is called with the number of
    images each batch finishes.
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


@dataclass(frozen=True)
class Storage:
    """Where a unit's layers go when they outgrow RAM: the activation store, its dtype, and the layers of
    later units written in the same forward pass (probed by those units)."""

    store: ActivationStore
    dtype: Any = np.float32
    extract_also: tuple[LayerInfo, ...] = ()


@dataclass(frozen=True)
class Ablation:
    """What an ablation unit zeroes and re-probes: the top ``fractions`` of VIP neurons, per attribute."""

    fractions: tuple[float, ...]
    attributes: tuple[str, ...]
    top_k: int = 8
    components: int = 8


class _InMemory:
    """A unit's layers in RAM, from one forward pass stopped after the last of them."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def probe(self, info: LayerInfo, probe: Callable[[Any], Any]) -> Any:
        """``probe`` of the layer's (images x features) array, which is then dropped: each is probed once."""
        return probe(self.arrays.pop(info.name))


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
    forward: Forward, layers: Sequence[LayerInfo], storage: Storage | None = None
) -> _InMemory | _OnDisk:
    """The layers of the images, extracted into RAM without ``storage``, else into its store."""
    if storage is None:
        names = [info.name for info in layers]
        arrays = extract(
            forward.model,
            forward.loader(),
            names,
            device=forward.device,
            progress=forward.progress,
            precision=forward.precision,
        )
        return _InMemory(arrays)
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
    storage: Storage | None = None,
) -> tuple[list[dict], list[dict]]:
    """Probe every layer of ``layers`` for every attribute: (result rows, VIP-study rows).

    Without ``storage`` the layers are held in memory; with it (a store keyed by this model and the
    draws' images) they are extracted into the store, batches already there are not recomputed, and each
    layer is probed straight from disk, so memory no longer grows with the layer width. ``seed`` draws the
    VIP study's neurons.
    """
    rows_by_attribute = attribute_rows(draws, forward.images)

    def layer_probes(info: LayerInfo) -> Callable[[Any], Any]:
        return lambda X: probe_layer(
            X,
            info.shape,
            rows_by_attribute,
            k=probe.top_k,
            n_components=probe.components,
            single_units=probe.single_units,
            vip_study=probe.vip_study,
            seed=seed,
        )

    source = _activations(forward, layers, storage)
    outputs = [source.probe(info, layer_probes(info)) for info in layers]
    results, vip_rows = [], []
    for info, out in zip(layers, outputs, strict=True):
        layer_keys = {"layer": info.name, "depth": info.depth, "kind": info.kind, "n_features": info.features}
        results += [{**layer_keys, **row} for row in out.rows]
        vip_rows += [{"layer": info.name, "depth": info.depth, **row} for row in out.vip_rows]
    return results, vip_rows


def ablation_rows(
    forward: Forward,
    draws: Draws,
    ablated: LayerInfo,
    later: Sequence[LayerInfo],
    ablation: Ablation,
    storage: Storage | None = None,
) -> list[dict]:
    """Thesis Table 5.4: zero the top-VIP neurons of ``ablated`` and re-probe every later layer.

    For each attribute the ablated layer's VIP comes from its own layer probe (fitted on the train draw);
    the top ``fraction`` of its neurons are zeroed inside the forward pass, the later layers re-extracted
    and probed again (whole layer, top-k channels, top-k neurons) and compared with the unablated probes
    of the same split: a validation row with the validation baseline, a test row with the test baseline
    (thesis section 5.3: the drop is measured where the probe is scored). Without ``storage`` the layers
    are held in RAM. With it, the clean layers are read from its store (the probe units of the same model
    usually wrote them already) and each ablated pass goes through a store of its own next to it, keyed by
    the zeroed neurons and deleted once probed, so memory stays bounded by the batch however many later
    layers there are.
    """
    rows_by_attribute = attribute_rows(draws, forward.images, ablation.attributes)
    settings = {"k": ablation.top_k, "n_components": ablation.components}

    def probes(info: LayerInfo, selected: Mapping[str, AttributeRows], **kwargs: Any) -> Callable[[Any], Any]:
        return lambda X: probe_layer(X, info.shape, selected, **settings, **kwargs)

    store = storage.store if storage is not None else None
    clean = _activations(forward, [ablated, *later], storage)
    ablated_probe = clean.probe(ablated, probes(ablated, rows_by_attribute))
    baseline = {  # each split's rows are compared with the same split's unablated probe
        (info.name, row["attribute"], row["representation"], row["split"]): row["accuracy"]
        for info in later
        for row in clean.probe(info, probes(info, rows_by_attribute)).rows
    }
    del clean
    rows = []
    for attribute, vip in ablated_probe.vips.items():
        selected = {attribute: rows_by_attribute[attribute]}
        order = np.argsort(-vip, kind="stable")
        for fraction in ablation.fractions:
            neurons = order[: max(1, math.ceil(fraction * vip.size))]
            hit_storage = None
            if storage is not None and store is not None:
                zeroed = {"layer": ablated.name, "neurons": hashlib.sha256(neurons.tobytes()).hexdigest()}
                hit_store = ActivationStore.open(
                    store.path.parent / "ablated", {**store.key, "ablated": zeroed}, store.batch_size
                )
                hit_storage = Storage(hit_store, storage.dtype)
            with ablate(forward.model, ablated.name, neurons=neurons):  # also for a re-extraction
                hit = _activations(forward, later, hit_storage)
                probed = {info.name: hit.probe(info, probes(info, selected)) for info in later}
            if hit_storage is not None:
                shutil.rmtree(hit_storage.store.path)
            for info in later:
                for row in probed[info.name].rows:
                    before = baseline[(info.name, attribute, row["representation"], row["split"])]
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
