"""`faceprobe demo`: the whole method, offline, on synthetic faces, through `faceprobe run` and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from faceprobe.cli._app import app, out_console, progress_bars, stepper

MODEL_LABEL = "small residual CNN trained on synthetic identities"


@app.command(epilog="Example: faceprobe demo --quick --out /tmp/demo, then open /tmp/demo/report/index.html")
def demo(
    out: Annotated[
        Path,
        typer.Option(help="Folder for the data, the networks, the run folder (OUT/run) and the report."),
    ] = Path("faceprobe-demo"),
    quick: Annotated[
        bool,
        typer.Option(help="Smaller data, fewer epochs, 8 attributes and 3 targets: about 2 minutes, not 5."),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the data, the draws and the training.")] = 0,
) -> None:
    """Run the whole method offline on synthetic faces with planted attributes, and write its report.

    Generates faces in CelebA's layout (OUT/data-*, reused when already there), trains a small residual
    face-recognition CNN on their identities (softmax, SGD; OUT/model) and the multitask attribute baseline
    (OUT/baseline), then runs a study as `faceprobe run` does into OUT/run: every block output and residual
    branch of the trained network and of the same network with random weights, probed for every planted
    attribute (the whole layer by PLS with 8 components + QDA, its top-8 VIP channels and neurons, its best
    single channel and neuron), the VIP study, and the ablation of the top-VIP neurons of one block; and
    targets beyond binary the faces plant: Yaw (continuous, PLS regression), Hair_Color (four classes, PLS-DA
    + QDA) and Random_Value (a continuous control, R^2 near 0).
    Writes the report of that run to OUT/report/index.html (self-contained: open it in a browser), prints
    the best layer per attribute and the report's path. Control_Random (random labels) is the control: it
    should stay near 50% at every layer. OUT/model, OUT/baseline, OUT/run and OUT/report are replaced.
    """
    from faceprobe.demo import DemoConfig, best_layers, run_demo

    config = DemoConfig.quick(seed) if quick else DemoConfig(seed=seed)
    with progress_bars() as progress:
        result = run_demo(out, config, step=stepper(progress))
    table = Table(
        title=f"Best layer per attribute, {MODEL_LABEL}",
        caption="validation accuracy (%) of the best layer, and of its top-8 VIP channels and neurons "
        "(balanced accuracy or R^2 where the target says so); multitask: the multitask attribute network on "
        "the test identities (Table 5.2's ceiling)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    best = best_layers(result.results)
    table.add_column("attribute", no_wrap=True)
    table.add_column("best layer", overflow="fold", min_width=best["layer"].str.len().max())
    for column in ("whole\nlayer", "top-8\nch.", "top-8\nneur.", "multi-\ntask"):
        table.add_column(column, justify="right", min_width=max(map(len, column.split("\n"))))
    ceiling = result.baseline.set_index("attribute")["accuracy"]
    for row in best.itertuples():
        probes = (row.layer_accuracy, row.channels_accuracy, row.neurons_accuracy)
        cells = (_percent(v) for v in (*probes, ceiling.get(row.attribute)))
        name = row.attribute if row.metric == "accuracy" else f"{row.attribute} ({_METRICS[row.metric]})"
        table.add_row(name, row.layer, *cells)
    out_console.print(table)
    out_console.print(
        f"identity accuracy on held-out images: {100 * result.identity_accuracy:.1f}%  |  "
        + "  ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    )
    # whole paths on their own lines, never wrapped, so they can be copied
    out_console.print(
        f"run:    {result.run_dir}\nreport: {result.report_path}", soft_wrap=True, highlight=False
    )


_METRICS = {"balanced_accuracy": "balanced acc.", "r2": "R^2"}


def _percent(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"
