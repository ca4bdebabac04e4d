"""The ``faceprobe`` command line: thin Typer commands over the library, one module per command.

Every public module of this package registers its commands on :data:`app` when imported; this file imports
them all, so a new command is a new module.
"""

from __future__ import annotations

import importlib
import pkgutil

from faceprobe.cli._app import app, main

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["app", "main"]
