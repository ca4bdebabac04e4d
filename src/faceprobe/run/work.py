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
from faceprobe.studies.layerwise import AttributeRows, probe_layer

__all__ = ["Draws", "ablation_rows", "attribute_rows", "probe_rows"]


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


def _loader(dataset: Any, images: Sequence[str], transform: Callable, batch_size: int) -> DataLoader:
    return DataLoader(
        dataset.torch_dataset(images, transform=transform), batch_size=batch_size, shuffle=False
    )


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
    model: nn.Module,
    transform: Callable,
    dataset: Any,
    images: Sequence[str],
    layers: Sequence[LayerInfo],
    batch_size: int,
    device: torch.device | str,
    precision: str,
    store: ActivationStore | None = None,
    store_dtype: Any = np.float32,
    progress: Callable[[int], None] | None = None,
    extract_also: Sequence[LayerInfo] = (),
) -> _InMemory | _OnDisk:
    """The layers of ``images``, extracted into RAM without ``store``, else into it (and ``extract_also``)."""
    if store is None:
        names = [info.name for info in layers]
        loader = _loader(dataset, images, transform, batch_size)
        return _InMemory(extract(model, loader, names, device=device, progress=progress, precision=precision))
    return _OnDisk(
        functools.partial(
            extract_to_store,
            model,
            dataset.torch_dataset(images, transform=transform),
            [*layers, *extract_also],
            store,
            dtype=store_dtype,
            device=device,
            progress=progress,
            precision=precision,
        ),
        store,
    )


def probe_rows(
    model: nn.Module,
    transform: Callable,
    dataset: Any,
    draws: Draws,
    layers: Sequence[LayerInfo],
    probe: Mapping[str, Any],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    store: ActivationStore | None = None,
    store_dtype: Any = np.float32,
    precision: str = "float32",
    extract_also: Sequence[LayerInfo] = (),
) -> tuple[list[dict], list[dict]]:
    """Probe every layer of ``layers`` for every attribute: (result rows, VIP-study rows).

    Without ``store`` the layers are held in memory; with one (keyed by this model and ``draws.images()``)
    they are extracted into it, batches already there are not recomputed, and each layer is probed
    straight from disk, so memory no longer grows with the layer width; ``extract_also`` are layers written
    into the store in the same forward pass but probed later (by other units). ``precision`` "bfloat16"
    runs the forward under autocast (on a GPU).
    """
    images = draws.images()
    rows_by_attribute = attribute_rows(draws, images)

    def layer_probes(info: LayerInfo) -> Callable[[Any], Any]:
        return lambda X: probe_layer(
            X,
            info.shape,
            rows_by_attribute,
            k=probe["top_k"],
            n_components=probe["components"],
            single_units=probe["single_units"],
            vip_study=probe["vip_study"],
            seed=seed,
            keep_vip=True,
        )

    source = _activations(
        model,
        transform,
        dataset,
        images,
        layers,
        batch_size,
        device,
        precision,
        store,
        store_dtype,
        progress,
        extract_also,
    )
    outputs = [source.probe(info, layer_probes(info)) for info in layers]
    results, vip_rows = [], []
    for info, out in zip(layers, outputs, strict=True):
        layer_keys = {"layer": info.name, "depth": info.depth, "kind": info.kind, "n_features": info.features}
        results += [{**layer_keys, **row} for row in out.rows]
        vip_rows += [{"layer": info.name, "depth": info.depth, **row} for row in out.vip_rows]
    return results, vip_rows


def ablation_rows(
    model: nn.Module,
    transform: Callable,
    dataset: Any,
    draws: Draws,
    ablated: LayerInfo,
    later: Sequence[LayerInfo],
    fractions: Sequence[float],
    attributes: Sequence[str],
    probe: Mapping[str, Any],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "float32",
    store: ActivationStore | None = None,
    store_dtype: Any = np.float32,
) -> list[dict]:
    """Thesis Table 5.4: zero the top-VIP neurons of ``ablated`` and re-probe every later layer.

    For each attribute the ablated layer's VIP comes from its own layer probe (fitted on the train draw);
    the top ``fraction`` of its neurons are zeroed inside the forward pass, the later layers re-extracted
    and probed again (whole layer, top-k channels, top-k neurons) and compared with the unablated probes.
    Without ``store`` the layers are held in RAM. With one, the clean layers are read from it (the probe
    units of the same model usually wrote them already) and each ablated pass goes through a store of its
    own next to it, keyed by the zeroed neurons and deleted once probed, so memory stays bounded by the
    batch however many later layers there are.
    """
    images = draws.images()
    device = torch.device(device)
    rows_by_attribute = attribute_rows(draws, images, attributes)
    settings = {"k": probe["top_k"], "n_components": probe["components"]}

    def activations(layers: Sequence[LayerInfo], into: ActivationStore | None) -> _InMemory | _OnDisk:
        return _activations(
            model, transform, dataset, images, layers, batch_size, device, precision, into, store_dtype
        )

    def probes(info: LayerInfo, selected: Mapping[str, AttributeRows], **kwargs: Any) -> Callable[[Any], Any]:
        return lambda X: probe_layer(X, info.shape, selected, **settings, **kwargs)

    clean = activations([ablated, *later], store)
    ablated_probe = clean.probe(ablated, probes(ablated, rows_by_attribute, keep_vip=True))
    baseline = {
        (info.name, row["attribute"], row["representation"]): row["accuracy"]
        for info in later
        for row in clean.probe(info, probes(info, rows_by_attribute))
    }
    del clean
    rows = []
    for attribute, vip in ablated_probe.vips.items():
        selected = {attribute: rows_by_attribute[attribute]}
        order = np.argsort(-vip, kind="stable")
        for fraction in fractions:
            neurons = order[: max(1, math.ceil(fraction * vip.size))]
            hit_store = None
            if store is not None:
                zeroed = {"layer": ablated.name, "neurons": hashlib.sha256(neurons.tobytes()).hexdigest()}
                hit_store = ActivationStore.open(
                    store.path.parent / "ablated", {**store.key, "ablated": zeroed}, store.batch_size
                )
            with ablate(model, ablated.name, neurons=neurons):  # also for a re-extraction on a bad chunk
                hit = activations(later, hit_store)
                probed = {info.name: hit.probe(info, probes(info, selected)) for info in later}
            if hit_store is not None:
                shutil.rmtree(hit_store.path)
            for info in later:
                for row in probed[info.name]:
                    before = baseline[(info.name, attribute, row["representation"])]
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
                            "accuracy": row["accuracy"],
                            "baseline_accuracy": before,
                            "drop": before - row["accuracy"],
                        }
                    )
    return rows
