"""`faceprobe probe-array`: probe activations computed elsewhere (.npy)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from faceprobe.cli._app import app, out_console, parse_ints
from faceprobe.errors import FaceprobeError


@app.command(
    "probe-array",
    epilog=(
        "Example: faceprobe probe-array layer3.npy eyeglasses.txt --shape 256,14,14\n\n"
        "LABELS holds one value per row of FEATURES: -1/1, 0/1 or true/false, as a .npy file or text "
        "(one per line); both classes must occur, and anything else (0.3, 2, NaN, -1 with 0) is refused."
    ),
)
def probe_array(
    features: Annotated[
        Path, typer.Argument(help="A .npy file of activations, samples x features (float32/16/64).")
    ],
    labels: Annotated[
        Path, typer.Argument(help="Binary labels, one per sample (.npy, or text one per line).")
    ],
    shape: Annotated[
        str | None,
        typer.Option(
            help="Shape C,H,W of one sample, to rank and probe channels (default: the array's own)."
        ),
    ] = None,
    components: Annotated[int, typer.Option(min=1, help="PLS components.")] = 8,
    top_k: Annotated[
        int, typer.Option(min=1, help="Units kept by VIP for the channel and neuron probes.")
    ] = 8,
    val_fraction: Annotated[float, typer.Option(min=0.05, max=0.95, help="Share of samples held out.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the stratified train/validation split.")] = 0,
) -> None:
    """Probe activations you already have: PLS + QDA on the whole array, then on its top VIP units.

    The array is memory-mapped, never loaded whole or converted to float64, so it can be larger than RAM
    (except a big-endian array, which is converted to this machine's byte order in memory).
    Prints validation accuracy of the whole layer, the top-k VIP channels (with --shape) and the top-k VIP
    neurons.
    """
    from faceprobe.arrays import load_features, load_labels

    X, sample_shape = load_features(features)
    y = load_labels(labels, expected=X.shape[0])
    layer_shape = parse_ints(shape, "--shape") if shape else sample_shape
    if int(np.prod(layer_shape)) != X.shape[1]:
        raise FaceprobeError(
            f"--shape {shape} has {int(np.prod(layer_shape))} features but {features} has {X.shape[1]}"
        )
    # torch and scikit-learn only once the inputs are read: a mistake in them is said at once
    from faceprobe.studies.layerwise import AttributeRows, probe_layer, split_rows

    train, val = split_rows(y, val_fraction, seed)
    rows = probe_layer(
        X,
        layer_shape,
        {labels.stem: AttributeRows(train, val, y[train], y[val])},
        k=top_k,
        n_components=components,
    ).rows
    table = Table(
        title=f"{escape(features.name)}: validation accuracy ({len(train)} train / {len(val)} validation)"
    )
    for column in ("representation", "k", "accuracy", "note"):
        table.add_column(column)
    for row in rows:
        if len(layer_shape) == 1 and row["representation"] == "channels":
            continue
        accuracy = "n/a" if np.isnan(row["accuracy"]) else f"{100 * row['accuracy']:.1f}%"
        table.add_row(row["representation"], str(row["k"]), accuracy, escape(row["note"]))
    out_console.print(table)
