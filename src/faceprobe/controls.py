"""The random-label controls: attributes nothing in an image predicts, so a probe's accuracy on them is what
it finds in noise (a control task in the sense of Hewitt and Liang 2019; beyond the thesis, which has none).

``data.controls = N`` in a study gives ``Control_Random`` and ``Control_Random_2`` ... ``Control_Random_N``,
each with its own seeded coin flip per image; several give the spread of what noise reaches at a layer. One
name test, :func:`is_control`, tells every view which attributes are controls: they are references, never
part of an average over attributes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the names at start-up; numpy and pandas only where labels are used
    import numpy as np
    import pandas as pd

__all__ = ["CONTROL", "control_names", "control_rows", "is_control", "with_controls"]

#: The first random-label control, the one every run has (its name and labels are those of older runs).
CONTROL = "Control_Random"
_NAME = re.compile(rf"{CONTROL}(_[2-9]|_[1-9][0-9]+)?")


def control_names(count: int) -> list[str]:
    """The names of ``count`` controls: ``Control_Random``, then ``Control_Random_2`` onwards."""
    return [CONTROL, *(f"{CONTROL}_{i}" for i in range(2, count + 1))]


def is_control(name: object) -> bool:
    """Whether attribute ``name`` is a random-label control (``Control_Random`` or ``Control_Random_K``)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def control_rows(attributes: pd.Series) -> np.ndarray:
    """Per row of a table's ``attribute`` column, whether it is a control's row."""
    return attributes.astype(str).map(is_control).to_numpy(bool)


def with_controls(labels: pd.DataFrame, seed: int, count: int = 1) -> pd.DataFrame:
    """``labels`` (0/1 per image and attribute) plus ``count`` random-label controls drawn from ``seed``.

    A control the labels already hold (a synthetic dataset plants ``Control_Random``) is kept. The first
    is drawn as it always was (generator ``[seed, 7]``) so a one-control run keeps its labels and results;
    the K-th from ``[seed, 7, K]``, so each control has labels of its own and adding controls changes none
    of the earlier ones.
    """
    import numpy as np

    out = labels.copy()
    for k, name in enumerate(control_names(count), start=1):
        if name not in out:
            rng = np.random.default_rng([seed, 7] if k == 1 else [seed, 7, k])
            out[name] = rng.integers(0, 2, len(out)).astype(np.int8)
    return out
