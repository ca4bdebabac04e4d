"""The ``faceprobe`` command line: thin Typer commands over the library.

Problems the user can fix arrive as one line (``error: ...``) and exit status 2; no traceback is shown
unless FACEPROBE_DEBUG=1 is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from faceprobe import __version__
from faceprobe.errors import FaceprobeError

app = typer.Typer(
    name="faceprobe",
    help=(
        "Measure where a face-recognition network encodes facial attributes: in which layers, channels and "
        "single neurons, with PLS + QDA probes and VIP scores (Diniz, 2021).\n\n"
        "Start with [bold]faceprobe demo[/bold]: it runs the whole method offline on synthetic faces."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
MODEL_LABEL = "small residual CNN trained on synthetic identities"
out_console = Console()


def _version(value: bool) -> None:
    if value:
        out_console.print(f"faceprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """faceprobe: probe face-recognition CNNs for facial attributes."""


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command(epilog="Example: faceprobe demo --quick --out /tmp/demo")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the data, model, results.parquet and figure.")] = Path(
        "faceprobe-demo"
    ),
    quick: Annotated[
        bool, typer.Option(help="Smaller data, fewer epochs and 7 attributes: about 2 minutes instead of ~8.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the data, the draws and the training.")] = 0,
) -> None:
    """Run the whole method offline on synthetic faces with planted attributes.

    Generates faces in CelebA's layout, trains a small residual face-recognition CNN on their identities
    (softmax, SGD), then probes every block output for every planted attribute: the whole layer (PLS with 8
    components + QDA), its top-8 VIP channels and its top-8 VIP neurons. Prints the best layer per
    attribute and writes OUT/results.parquet and OUT/accuracy_vs_depth.png. Control_Random (random labels)
    is the control: it should stay near 50% at every layer.
    """
    from faceprobe.demo import DemoConfig, best_layers, run_demo

    config = DemoConfig.quick(seed) if quick else DemoConfig(seed=seed)
    with _progress() as progress:
        result = run_demo(out, config, step=_stepper(progress))
    table = Table(title=f"Best layer per attribute: validation accuracy (%), {MODEL_LABEL}")
    table.add_column("attribute", no_wrap=True)
    table.add_column("best layer", no_wrap=True)
    for column in ("depth", "layer", "top-8 ch.", "top-8 neur."):
        table.add_column(column, justify="right")
    for row in best_layers(result.results).itertuples():
        table.add_row(
            row.attribute,
            row.layer,
            str(row.depth),
            *(f"{100 * v:.1f}" for v in (row.layer_accuracy, row.channels_accuracy, row.neurons_accuracy)),
        )
    out_console.print(table)
    out_console.print(
        f"identity accuracy on held-out images: {100 * result.identity_accuracy:.1f}%  |  "
        + "  ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    )
    out_console.print(f"results: {result.results_path}\nfigure:  {result.figure_path}")


@app.command(epilog="Example: faceprobe synth --out /tmp/faces --identities 100 --images-per-identity 30")
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write (CelebA layout).")],
    identities: Annotated[int, typer.Option(min=1, help="Number of distinct people.")] = 100,
    images_per_identity: Annotated[int, typer.Option(min=1, help="Images of each person.")] = 30,
    size: Annotated[int, typer.Option(min=32, help="Image width and height in pixels.")] = 112,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
) -> None:
    """Generate synthetic aligned faces with planted attributes and identities, in CelebA's layout.

    Each identity fixes its face shape, eyes, nose, lips, skin, eyebrows, hair and beard; each image varies
    pose, lighting, background, expression and accessories (glasses, hat, earrings, necklace, necktie,
    lipstick). Labels use CelebA's attribute names plus Control_Random (random labels). The folder holds
    img_align_celeba/, list_attr_celeba.txt, identity_CelebA.txt and list_eval_partition.txt, so every
    command that reads CelebA reads it too.
    """
    from faceprobe.data.synth import generate

    with _progress() as progress:
        path = generate(
            out,
            identities,
            images_per_identity,
            size,
            seed,
            workers,
            progress=_stepper(progress)("synthesising faces", identities * images_per_identity),
        )
    out_console.print(f"wrote {identities * images_per_identity} faces to {path}")


@app.command(
    "probe-array",
    epilog=(
        "Example: faceprobe probe-array layer3.npy eyeglasses.txt --shape 256,14,14\n\n"
        "LABELS holds one value per row of FEATURES: -1/1, 0/1 or true/false, as a .npy file or text "
        "(one per line)."
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

    The array is memory-mapped, never loaded whole or converted to float64, so it can be larger than RAM.
    Prints validation accuracy of the whole layer, the top-k VIP channels (with --shape) and the top-k VIP
    neurons.
    """
    from faceprobe.arrays import load_features, load_labels
    from faceprobe.studies.layerwise import AttributeRows, probe_layer, split_rows

    X, sample_shape = load_features(features)
    y = load_labels(labels, expected=X.shape[0])
    layer_shape = _parse_ints(shape, "--shape") if shape else sample_shape
    if int(np.prod(layer_shape)) != X.shape[1]:
        raise FaceprobeError(
            f"--shape {shape} has {int(np.prod(layer_shape))} features but {features} has {X.shape[1]}"
        )
    train, val = split_rows(y, val_fraction, seed)
    rows = probe_layer(
        X,
        layer_shape,
        {labels.stem: AttributeRows(train, val, y[train], y[val])},
        k=top_k,
        n_components=components,
    )
    table = Table(title=f"{features.name}: validation accuracy ({len(train)} train / {len(val)} validation)")
    for column in ("representation", "k", "accuracy", "note"):
        table.add_column(column)
    for row in rows:
        if len(layer_shape) == 1 and row["representation"] == "channels":
            continue
        accuracy = "n/a" if np.isnan(row["accuracy"]) else f"{100 * row['accuracy']:.1f}%"
        table.add_row(row["representation"], str(row["k"]), accuracy, row["note"])
    out_console.print(table)


def _parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FaceprobeError(f"{flag} takes comma-separated integers, e.g. 256,14,14; got {text!r}") from None
    if any(v < 1 for v in values):
        raise FaceprobeError(f"{flag} values must be positive; got {text!r}")
    return values


def _stepper(progress: Progress) -> Callable[[str, int | None], Callable[[int], None]]:
    def step(description: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda k: progress.advance(task, k)

    return step


def main() -> None:
    """Console entry point: run the app and turn errors into one line each."""
    try:
        app()
    except FaceprobeError as err:
        console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; finished work is kept, run the same command again to continue")
        sys.exit(130)
    except Exception as err:
        if os.environ.get("FACEPROBE_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/red] {type(err).__name__}: {err} (a faceprobe bug: please report it; "
            "set FACEPROBE_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
