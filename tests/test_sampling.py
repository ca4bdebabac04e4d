"""The per-attribute balanced draws of the thesis's protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faceprobe.data.sampling import balanced_draws, union_ids


def _labels(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    return pd.DataFrame(
        {"Common": rng.random(n) < 0.5, "Rare": rng.random(n) < 0.05, "Mostly": rng.random(n) < 0.9},
        index=ids,
    ).astype(np.int8)


def test_draws_are_balanced_disjoint_and_reproducible():
    labels = _labels()
    draws = balanced_draws(labels, n_train=100, n_val=300, seed=3)
    again = balanced_draws(labels, n_train=100, n_val=300, seed=3)
    other = balanced_draws(labels, n_train=100, n_val=300, seed=4)
    assert draws == again
    assert draws["Common"].train != other["Common"].train
    for attribute, draw in draws.items():
        assert not set(draw.train) & set(draw.val)
        assert len(set(draw.train)) == len(draw.train)
        for part in (draw.train, draw.val):
            positives = labels.loc[list(part), attribute].sum()
            assert positives * 2 == len(part), attribute
    assert (len(draws["Common"].train), len(draws["Common"].val)) == (100, 300)
    assert not draws["Common"].shortened


def test_rare_attribute_gets_the_largest_balanced_draw_with_the_same_ratio():
    labels = _labels()
    rare = balanced_draws(labels, n_train=100, n_val=300, seed=0)["Rare"]
    positives = int(labels["Rare"].sum())
    assert rare.shortened
    assert len(rare.train) + len(rare.val) == 2 * positives
    assert abs(len(rare.train) / (len(rare.train) + len(rare.val)) - 0.25) < 0.02
    mostly = balanced_draws(labels, n_train=100, n_val=300, seed=0)["Mostly"]
    assert len(mostly.train) + len(mostly.val) == 2 * int((labels["Mostly"] == 0).sum())


def test_a_draw_does_not_depend_on_the_other_attributes():
    labels = _labels()
    alone = balanced_draws(labels[["Rare"]], 100, 300, seed=1)["Rare"]
    together = balanced_draws(labels, 100, 300, seed=1)["Rare"]
    assert alone == together


def test_union_holds_each_image_once():
    labels = _labels()
    draws = balanced_draws(labels, 100, 300, seed=0)
    union = union_ids(draws, extra=("000001.jpg",))
    expected = {"000001.jpg"}.union(*(set(d.train) | set(d.val) for d in draws.values()))
    assert union == sorted(expected)
