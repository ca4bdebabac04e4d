"""`faceprobe init`: a commented study file to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceprobe.cli._app import app, out_console


@app.command(epilog="Example: faceprobe init --preset thesis thesis.toml")
def init(
    study: Annotated[Path, typer.Argument(help="The study file to write (.toml).")],
    preset: Annotated[
        str, typer.Option(help="starter (a small study to edit) or thesis (the thesis's whole study).")
    ] = "starter",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented study file: edit [data] and [[models]], then `faceprobe run STUDY`."""
    from faceprobe.atomic import atomic_write_text
    from faceprobe.errors import FaceprobeError
    from faceprobe.run.presets import preset_text

    if study.suffix != ".toml":
        raise FaceprobeError(f"{study}: a study file ends in .toml")
    if study.exists() and not force:
        raise FaceprobeError(f"{study} exists; pick another name or pass --force to overwrite it")
    atomic_write_text(study, preset_text(preset))
    out_console.print(f"wrote {study}; edit [data] and [[models]], then: faceprobe run {study}", markup=False)
