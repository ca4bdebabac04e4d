"""`faceprobe demo`: the whole method, offline, on synthetic faces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from faceprobe.cli._app import app, out_console, progress_bars, stepper

MODEL_LABEL = "small residual CNN trained on synthetic identities"


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
    with progress_bars() as progress:
        result = run_demo(out, config, step=stepper(progress))
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
