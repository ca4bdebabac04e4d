"""The model options every command that loads a network shares, and their parsing into ``load_model`` calls.

Commands declare the options with the ``Annotated`` aliases below and pass them to :func:`load_from_options`,
so ``--input-size 112x96 --crop L,T,R,B --mean R,G,B --std R,G,B --bgr --non-strict`` read the same
everywhere.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from faceprobe.errors import FaceprobeError

if TYPE_CHECKING:
    from faceprobe.models import LoadedModel

__all__ = [
    "BgrOption",
    "CropOption",
    "FormatOption",
    "InputSizeOption",
    "MeanOption",
    "NonStrictOption",
    "OutputFormat",
    "StdOption",
    "WeightsOption",
    "load_from_options",
    "parse_crop",
    "parse_floats",
]


class OutputFormat(str, Enum):
    """How a command prints its answer: a table for people, JSON for scripts."""

    table = "table"
    json = "json"


FormatOption = Annotated[OutputFormat, typer.Option(help="table for people, json for scripts.")]

_PANEL = "Model and preprocessing"
WeightsOption = Annotated[
    str,
    typer.Option(
        help="random, imagenet (from the torch cache, never downloaded) or checkpoint:PATH.",
        rich_help_panel=_PANEL,
    ),
]
InputSizeOption = Annotated[
    str | None,
    typer.Option(help="Network input HxW, e.g. 112x96 (default: the model's).", rich_help_panel=_PANEL),
]
CropOption = Annotated[
    str | None,
    typer.Option(
        help="Crop box LEFT,TOP,RIGHT,BOTTOM on the source image, in pixels.", rich_help_panel=_PANEL
    ),
]
MeanOption = Annotated[
    str | None, typer.Option(help="Normalisation mean R,G,B on the 0-1 scale.", rich_help_panel=_PANEL)
]
StdOption = Annotated[
    str | None, typer.Option(help="Normalisation std R,G,B on the 0-1 scale.", rich_help_panel=_PANEL)
]
BgrOption = Annotated[
    bool | None,
    typer.Option("--bgr/--rgb", help="Channel order the network expects.", rich_help_panel=_PANEL),
]
NonStrictOption = Annotated[
    bool,
    typer.Option(
        "--non-strict", help="Accept a checkpoint that fits only partly (reported).", rich_help_panel=_PANEL
    ),
]


def parse_floats(text: str | None, flag: str, count: int) -> tuple[float, ...] | None:
    """``count`` comma-separated numbers, or None when the flag was not given."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise FaceprobeError(f"{flag} takes {count} comma-separated numbers; got {text!r}")
    return values


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"35,60,143,186"`` -> the crop box LEFT,TOP,RIGHT,BOTTOM in whole pixels; None stays None."""
    box = parse_floats(text, "--crop", 4)
    if box is None:
        return None
    if any(v != int(v) for v in box):
        raise FaceprobeError(f"--crop takes whole pixels LEFT,TOP,RIGHT,BOTTOM; got {text!r}")
    return tuple(int(v) for v in box)  # type: ignore[return-value]


def load_from_options(
    model: str,
    weights: str,
    input_size: str | None = None,
    crop: str | None = None,
    mean: str | None = None,
    std: str | None = None,
    bgr: bool | None = None,
    non_strict: bool = False,
    *,
    num_classes: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """:func:`faceprobe.models.load_model` with the command-line forms of its arguments."""
    from faceprobe.models import load_model
    from faceprobe.models.preprocessing import parse_size

    return load_model(
        model,
        weights,
        num_classes=num_classes,
        seed=seed,
        input_size=parse_size(input_size),
        crop=parse_crop(crop),
        mean=parse_floats(mean, "--mean", 3),  # type: ignore[arg-type]
        std=parse_floats(std, "--std", 3),  # type: ignore[arg-type]
        bgr=bgr,
        strict=not non_strict,
    )
