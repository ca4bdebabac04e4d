"""`faceprobe layers`: every probe-able output of a network, in execution order."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from faceprobe.cli._app import app, out_console
from faceprobe.cli.model_options import (
    BgrOption,
    CropOption,
    FormatOption,
    InputSizeOption,
    MeanOption,
    NonStrictOption,
    OutputFormat,
    StdOption,
    WeightsOption,
    load_from_options,
)


@app.command(epilog="Example: faceprobe layers resnet50 --select 'layer*.?' --format json")
def layers(
    model: Annotated[str, typer.Argument(help="A registered architecture or package.module:factory.")],
    weights: WeightsOption = "random",
    select: Annotated[str, typer.Option(help="auto (block level), all, or names and glob patterns.")] = "all",
    format: FormatOption = OutputFormat.table,
    input_size: InputSizeOption = None,
    crop: CropOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    bgr: BgrOption = None,
    non_strict: NonStrictOption = False,
) -> None:
    """List every probe-able output of a network in execution order: name, depth, kind, shape, features.

    Kinds: conv, bn, relu (any activation), pool, fc, embedding, residual (a residual branch before the
    add) and block (a residual block's post-skip output). Shared modules that run several times per
    forward have no single output and are not listed.
    """
    import torch

    from faceprobe.extract import catalogue, select_layers

    loaded = load_from_options(model, weights, input_size, crop, mean, std, bgr, non_strict)
    example = torch.zeros(1, 3, *loaded.preprocessing.input_size)
    chosen = select_layers(catalogue(loaded.module, example), select)
    if format is OutputFormat.json:
        rows = [
            {"name": i.name, "depth": i.depth, "kind": i.kind, "shape": list(i.shape), "features": i.features}
            for i in chosen
        ]
        out_console.print_json(json.dumps({"model": loaded.name, "digest": loaded.digest, "layers": rows}))
        return
    table = Table(title=f"{escape(loaded.name)} at {'x'.join(map(str, loaded.preprocessing.input_size))}")
    for column in ("depth", "name", "kind", "shape", "features"):
        table.add_column(column, justify="right" if column in ("depth", "features") else "left")
    for i in chosen:
        table.add_row(str(i.depth), escape(i.name), i.kind, "x".join(map(str, i.shape)), f"{i.features:,}")
    out_console.print(table)
