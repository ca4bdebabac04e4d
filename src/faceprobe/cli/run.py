"""`faceprobe run`, `faceprobe probe` and `faceprobe status`: the study, resumable, local or on Dask."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from faceprobe.cli._app import app, out_console, progress_bars, stepper
from faceprobe.cli.model_options import (
    BgrOption,
    CropOption,
    InputSizeOption,
    MeanOption,
    NonStrictOption,
    StdOption,
    parse_crop,
    parse_floats,
)

if TYPE_CHECKING:
    from faceprobe.run.config import RunConfig

_EXECUTOR_HELP = "local (one process, the default) or dask (a local cluster of --workers, or --scheduler)."


def _run(
    config: RunConfig, out: Path, executor: str | None, scheduler: str | None, workers: int | None
) -> None:
    from faceprobe.run.runner import run_study

    with progress_bars() as bars:
        status = run_study(config, out, executor, scheduler, workers, progress=stepper(bars))
    out_console.print(f"{len(status.finished)}/{status.total} work units finished; results in {out}")
    out_console.print(f"next: faceprobe report {out}")


@app.command(
    epilog=(
        "Example: faceprobe run study.toml --out runs/study\n\n"
        "Run the same command again after a crash: finished work units are kept and only the rest run. "
        "Distributed: --executor dask --scheduler tcp://HOST:8786 (start workers with dask-worker, or on "
        "SLURM with dask-jobqueue's SLURMCluster and pass its scheduler address)."
    )
)
def run(
    config: Annotated[
        Path, typer.Argument(help="A TOML study file: [data], [[models]], [probe], [ablation], [run].")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: the config's path without .toml).")
    ] = None,
    executor: Annotated[str | None, typer.Option(help=_EXECUTOR_HELP)] = None,
    scheduler: Annotated[str | None, typer.Option(help="Address of a running Dask scheduler.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Workers of the local Dask cluster.")] = None,
) -> None:
    """Run a whole probing study from a TOML file, resumably.

    For every model (architecture x weight origin x seed), every selected layer and every attribute: the
    layer probe (PLS + QDA), VIP, the top-k channel and neuron probes, each top unit alone, the VIP study,
    and the ablation study when configured; Control_Random rides along as a control. Results go to
    OUT/results.parquet, vip_study.parquet and ablation.parquet (folders of Parquet parts), with
    OUT/manifest.json and OUT/draws.parquet. See the module docstring of faceprobe.run.config for every key.
    """
    from faceprobe.run.config import load_config

    _run(load_config(config), out or config.with_suffix(""), executor, scheduler, workers)


@app.command(
    epilog=(
        "Example: faceprobe probe --model resnet50 --weights imagenet --data celeba:/data/celeba "
        "--attributes Eyeglasses,Wearing_Hat --layers 'layer*' --train 2048 --val 6144 --input-size 224 "
        "--out runs/r50"
    )
)
def probe(
    model: Annotated[str, typer.Option(help="Architecture: small, resnet18/34/50, mobilenet_v2, vgg16, ...")],
    data: Annotated[str, typer.Option(help="KIND:PATH, e.g. celeba:/data/celeba or synthetic:/tmp/faces.")],
    out: Annotated[Path, typer.Option(help="Run folder; run again with the same flags to resume.")],
    weights: Annotated[str, typer.Option(help="random | imagenet | checkpoint:PATH")] = "random",
    attributes: Annotated[str, typer.Option(help="Comma-separated attribute names, or all.")] = "all",
    layers: Annotated[
        str, typer.Option(help="auto (block outputs) | all | names or glob patterns.")
    ] = "auto",
    train: Annotated[int, typer.Option(min=4, help="Balanced train draw per attribute.")] = 2048,
    val: Annotated[int, typer.Option(min=4, help="Balanced validation draw per attribute.")] = 6144,
    test: Annotated[int, typer.Option(help="Test-split images to score (0 none, -1 all).")] = 0,
    input_size: InputSizeOption = None,
    crop: CropOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    bgr: BgrOption = None,
    non_strict: NonStrictOption = False,
    seed: Annotated[int, typer.Option(help="Seed of the draws and of random weights.")] = 0,
    vip_study: Annotated[
        int, typer.Option(help="Neurons per layer and attribute for the VIP study (0: off).")
    ] = 50,
    skip_bad_images: Annotated[
        bool, typer.Option(help="Leave out missing or corrupt images and list them in the manifest.")
    ] = False,
    memory_gb: Annotated[
        float,
        typer.Option(
            min=0,
            help="RAM for a work unit's layers; wider layers stream through the on-disk activation store "
            "in OUT/store (0: always).",
        ),
    ] = 4.0,
    store_dtype: Annotated[
        str, typer.Option(help="float32 | float16 (half the disk; float16 can overflow on some layers).")
    ] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="float32 | bfloat16 (forward passes under autocast, for GPUs).")
    ] = "float32",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    executor: Annotated[str | None, typer.Option(help=_EXECUTOR_HELP)] = None,
    scheduler: Annotated[str | None, typer.Option(help="Address of a running Dask scheduler.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Workers of the local Dask cluster.")] = None,
) -> None:
    """Probe one network from flags: a one-off study without a TOML file.

    Writes OUT/results.parquet (a folder of Parquet parts) and OUT/manifest.json; the same command on the same
    OUT resumes a killed run.
    """
    from faceprobe.run.config import parse_config

    raw = {
        "data": {
            "spec": data,
            "attributes": "all" if attributes == "all" else attributes.split(","),
            "train": train,
            "val": val,
            "test": test,
            "seed": seed,
            "skip_bad_images": skip_bad_images,
        },
        "models": [
            {
                "architecture": model,
                "weights": [weights],
                "seeds": [seed],
                "layers": layers,
                "input_size": input_size,
                "crop": parse_crop(crop),
                "mean": parse_floats(mean, "--mean", 3),
                "std": parse_floats(std, "--std", 3),
                "bgr": bgr,
                "strict": not non_strict,
            }
        ],
        "probe": {"vip_study": vip_study},
        "run": {
            "memory_gb": memory_gb,
            "store_dtype": store_dtype,
            "device": device,
            "batch_size": batch_size,
        },
    }
    raw["models"][0] = {k: v for k, v in raw["models"][0].items() if v is not None}
    _run(parse_config(raw, "faceprobe probe"), out, executor, scheduler, workers)


@app.command(epilog="Example: faceprobe status runs/study")
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Show how far a run got: finished and pending work units."""
    from faceprobe.run.runner import run_status

    state = run_status(run_dir)
    table = Table(title=f"{run_dir}: {len(state.finished)}/{state.total} work units finished")
    table.add_column("unit", no_wrap=True)
    table.add_column("state")
    for unit in state.finished:
        table.add_row(unit, "finished")
    for unit in state.pending:
        table.add_row(unit, "pending")
    out_console.print(table)
    if not state.complete:
        out_console.print("resume with the same `faceprobe run` (or `faceprobe probe`) command")
