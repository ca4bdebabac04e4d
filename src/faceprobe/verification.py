"""Does a loaded network recognise faces? Embedding similarities on identity-labelled images, before probing.

A mis-loaded checkpoint, random weights or a wrong crop still produce activations, only meaningless ones. A
working recognition network puts two images of one person closer (cosine of the embeddings) than images of
two people and finds the same person as each image's nearest neighbour; a broken one finds everyone about
equally similar. :func:`check_identities` measures that on any identity-labelled data; :func:`check_pairs`
scores labelled pairs (LFW's 10-fold protocol) with :func:`faceprobe.data.lfw.lfw_verification_accuracy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from faceprobe.data.dataset import FaceDataset
from faceprobe.data.lfw import Verification, lfw_verification_accuracy, load_lfw_pairs
from faceprobe.errors import FaceprobeError
from faceprobe.extract import extract
from faceprobe.models.loading import LoadedModel

__all__ = ["IdentityCheck", "check_identities", "check_lfw_pairs", "embed", "pick_images"]

#: Below this gap between same- and different-identity mean cosine the network does not tell people apart.
MIN_GAP = 0.05
#: Above this mean cosine of different people the embedding has collapsed: random CNNs map every face to
#: nearly the same direction (0.9 and more measured here), trained recognition networks spread people
#: out (about 0 to 0.1), so this catches random weights even where they separate identities a little.
MAX_DIFFERENT = 0.5


@dataclass(frozen=True)
class IdentityCheck:
    """Mean cosine of same- and different-identity pairs, and nearest-neighbour identity accuracy.

    ``chance`` is the nearest-neighbour accuracy a network blind to identity would reach on these images;
    ``warning`` says in one line why the numbers look like a broken network, or is None.
    """

    n_images: int
    n_identities: int
    same: float
    different: float
    nearest_neighbour: float
    chance: float
    warning: str | None


def pick_images(identities: pd.Series, max_identities: int, per_identity: int, seed: int = 0) -> pd.Series:
    """Up to ``per_identity`` images each of up to ``max_identities`` people with 2+ images (seeded)."""
    counts = identities.value_counts()
    eligible = np.sort(counts.index[counts >= 2].to_numpy())
    if len(eligible) < 2:
        raise FaceprobeError("the data has fewer than 2 identities with 2+ images; verification needs more")
    rng = np.random.default_rng(seed)
    people = rng.choice(eligible, size=min(max_identities, len(eligible)), replace=False)
    chosen = [
        rng.choice(
            identities.index[identities == person].to_numpy(),
            min(per_identity, counts[person]),
            replace=False,
        )
        for person in np.sort(people)
    ]
    index = np.concatenate(chosen)
    return identities.loc[index]


def embed(
    loaded: LoadedModel,
    dataset: FaceDataset,
    ids: list[str],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """L2-normalised embeddings (n x d, float32) of the images ``ids`` under the model's preprocessing."""
    images = dataset.torch_dataset(ids, transform=loaded.preprocessing.transform())
    # The root module's name is "": with no embedding layer named, the network's output is the embedding.
    layer = loaded.embedding or ""
    values = extract(
        loaded.module, DataLoader(images, batch_size=batch_size), [layer], device=device, progress=progress
    )
    values = values[layer]
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def check_identities(embeddings: np.ndarray, identities: np.ndarray) -> IdentityCheck:
    """Same vs different identity cosine and nearest-neighbour accuracy of unit-norm ``embeddings``."""
    identities = np.asarray(identities)
    similarity = embeddings @ embeddings.T
    same = identities[:, None] == identities[None, :]
    np.fill_diagonal(same, False)
    different = identities[:, None] != identities[None, :]
    np.fill_diagonal(similarity, -np.inf)
    nearest = float(np.mean(identities[similarity.argmax(axis=1)] == identities))
    same_mean, different_mean = float(similarity[same].mean()), float(similarity[different].mean())
    chance = float(same.sum() / (len(identities) * (len(identities) - 1)))
    gap = same_mean - different_mean
    reasons = [
        text
        for broken, text in (
            (
                gap < MIN_GAP,
                f"same and other people are about equally similar ({same_mean:.3f} vs {different_mean:.3f})",
            ),
            (
                different_mean > MAX_DIFFERENT,
                f"different people look alike (mean cosine {different_mean:.3f})",
            ),
            (nearest < 2 * chance, f"nearest-neighbour accuracy {nearest:.1%} is near chance ({chance:.1%})"),
        )
        if broken
    ]
    warning = None
    if reasons:
        warning = (
            "; ".join(reasons) + ": the weights look random or mis-loaded, or the crop, size or normalisation"
            " is not what the network was trained with"
        )
    return IdentityCheck(
        len(identities), len(np.unique(identities)), same_mean, different_mean, nearest, chance, warning
    )


def check_lfw_pairs(
    loaded: LoadedModel,
    dataset: FaceDataset,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Verification:
    """LFW's 10-fold verification accuracy (pairs.txt in the dataset's root), by embedding cosine."""
    folds = load_lfw_pairs(dataset.root)
    pairs = [(pair, k) for k, fold in enumerate(folds) for pair in fold]
    ids = sorted({image for pair, _ in pairs for image in (pair.first, pair.second)})
    row = {image: i for i, image in enumerate(ids)}
    embeddings = embed(loaded, dataset, ids, batch_size, device, progress)
    first = embeddings[[row[pair.first] for pair, _ in pairs]]
    second = embeddings[[row[pair.second] for pair, _ in pairs]]
    return lfw_verification_accuracy(
        np.sum(first * second, axis=1),
        np.array([pair.same for pair, _ in pairs]),
        np.array([k for _, k in pairs]),
    )
