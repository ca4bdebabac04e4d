"""The ``faceprobe`` command line: thin Typer commands over the library, one module per command.

Every public module of this package registers its commands on :data:`app` when imported; this file imports
them all, so a new command is a new module.
"""

from __future__ import annotations

import importlib
import os
import pkgutil

# torch's OpenMP threads spin at the end of every parallel operation. When another process holds one of the
# cores (a shared node, a second run), a spinning thread keeps the thread it waits for off the CPU, and every
# operation of a forward pass waits out a scheduler time slice. Threads that sleep while they wait do not.
# Set before torch is imported (its OpenMP runtime reads it once); the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from faceprobe.allocator import reuse_freed_buffers
from faceprobe.cli._app import app, main

# The forward passes' activations are reused from one batch to the next instead of faulted in again.
reuse_freed_buffers()

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["app", "main"]
