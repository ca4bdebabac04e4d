"""The faces a training run reads: a dataset by its ``KIND:PATH`` spec, held-out splits, labelled images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from faceprobe.data.registry import FaceDataset, load_dataset
from faceprobe.errors import FaceprobeError

__all__ = ["LabelledFaces", "held_out_split", "load_faces"]


def load_faces(spec: str) -> FaceDataset:
    """The dataset ``spec`` names (``celeba:PATH``, ``synthetic:PATH``, ``vggface2:PATH``, ...)."""
    return load_dataset(spec)


def held_out_split(identities: pd.Series, fraction: float, seed: int) -> tuple[pd.Series, pd.Series]:
    """Hold out ``fraction`` of each identity's images, so every held-out identity is also a training one."""
    if not 0 < fraction < 1:
        raise FaceprobeError(f"the held-out fraction must be between 0 and 1 (exclusive); got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[str] = []
    for _, images in identities.groupby(identities, sort=True):
        held += list(rng.choice(images.index, size=round(fraction * len(images)), replace=False))
    is_held = identities.index.isin(held)
    return identities[~is_held], identities[is_held]


class LabelledFaces(Dataset):
    """``(image, target)`` pairs: face ``ids[i]`` of ``dataset``, opened (and cropped) by the dataset itself,
    transformed, with row ``targets[i]``. ``targets`` is public so identity sampling can weigh images."""

    def __init__(
        self,
        dataset: FaceDataset,
        ids: Sequence[str],
        targets: np.ndarray,
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        if len(ids) != len(targets):
            raise ValueError(f"{len(targets)} targets for {len(ids)} images; give one per image")
        self.dataset, self.ids, self.transform = dataset, list(ids), transform
        self.targets = torch.tensor(np.asarray(targets))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.dataset.open_image(self.ids[index])), self.targets[index]
