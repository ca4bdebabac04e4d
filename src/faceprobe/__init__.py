"""faceprobe: measure where face-recognition networks encode facial attributes.

The stable public API is :class:`PLS` (NIPALS partial least squares with VIP scores, for very wide float32
layer outputs) and :class:`Probe` (PLS projection + QDA, a scikit-learn classifier), with its kin for targets
beyond binary ones: :class:`MulticlassProbe` (PLS-DA + QDA, balanced accuracy) and :class:`RegressionProbe`
(PLS regression, R^2 and MAE).
"""

from __future__ import annotations

import os

import lazy_loader

# The passes' products run in MKL (torch's CPU matmul). On some CPUs (AVX-512 ones, AMD's among them) MKL's
# rounding depends on where a block lies in memory, so the same rows held in RAM, read from the store or
# streamed in batches gave sums that differ in the last bit. Its strict reproducible mode takes the same
# time here (docs/benchmarks.md) and makes the results independent of the source, as the tests demand. MKL
# reads the variable when it starts, so it is set on import, before torch runs anything; a user's own
# setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

# Every package of faceprobe names its public objects in its __init__.pyi and imports each on first use,
# so a command imports only what it runs: `faceprobe report` or a refused study file never waits for torch.
__getattr__, _, _names = lazy_loader.attach_stub(__name__, __file__)  # __dir__ below
__all__ = [*_names, "__version__"]


def __dir__() -> list[str]:
    return list(__all__)
