"""`faceprobe run`, `faceprobe probe` and `faceprobe status`: the study, resumable, local or on Dask."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
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


class Executor(str, Enum):
    """Where work units run."""

    local = "local"
    dask = "dask"


ExecutorOption = Annotated[
    Executor | None,
    typer.Option(
        help="local (one process, the default) or dask (a local cluster of --workers, or --scheduler)."
    ),
]
SchedulerOption = Annotated[str | None, typer.Option(help="Address of a running Dask scheduler.")]
WorkersOption = Annotated[int | None, typer.Option(min=1, help="Workers of the local Dask cluster.")]


def _run(
    config: RunConfig, out: Path, executor: Executor | None, scheduler: str | None, workers: int | None
) -> None:
    from faceprobe.run.runner import run_study
    from faceprobe.run.summary import summarise

    with progress_bars() as bars:
        status = run_study(
            config, out, executor.value if executor else None, scheduler, workers, progress=stepper(bars)
        )
    summary = summarise(out)
    table = Table(title="Best layer per attribute (whole-layer probe, validation accuracy)")
    for column in ("model", "attribute", "layer", "depth", "accuracy (%)", "images"):
        table.add_column(column, justify="right" if column in ("depth", "accuracy (%)", "images") else "left")
    for row in summary.best.itertuples():
        other = "" if row.metric == "accuracy" else f" ({row.metric.replace('_', ' ')})"  # another kind
        table.add_row(
            escape(row.model),
            escape(row.attribute + other),
            escape(row.layer),
            str(row.depth),
            f"{100 * row.accuracy:.1f}",
            str(row.n_eval),
        )
    out_console.print(table)
    for warning in summary.warnings:
        out_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    out_console.print(
        f"{len(status.finished)}/{status.total} work units finished; results in {out}", markup=False
    )
    if status.reclaimed:
        out_console.print(
            f"activation store deleted: {_gib(status.reclaimed)} freed (run.keep_store = true keeps it)"
        )
    elif config.run.keep_store:
        out_console.print(
            f"activation store kept (run.keep_store); `faceprobe clean {out}` removes it", markup=False
        )
    out_console.print(f"next: faceprobe report {out}", markup=False)


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**27 else f"{size / 2**20:.1f} MiB"


@app.command(
    epilog=(
        "Example: faceprobe run study.toml --out runs/study\n\n"
        "The thesis's study: faceprobe run --preset thesis --data celeba:/data/celeba --model resnet50 "
        "--weights checkpoint:runs/face --out runs/thesis (the preset's file: faceprobe init --preset thesis "
        "thesis.toml).\n\n"
        "Run the same command again after a crash: finished work units are kept and only the rest run. "
        "Distributed: --executor dask --scheduler tcp://HOST:8786 (start workers with dask-worker, or on "
        "SLURM with dask-jobqueue's SLURMCluster and pass its scheduler address)."
    )
)
def run(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="A TOML study file: [data], [[models]], [probe], [ablation], [run], [baseline]. "
            "Relative paths in it are read against its folder."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: the config's path without .toml).")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Run a shipped study instead of a file: thesis (needs --data, --model)."),
    ] = None,
    data: Annotated[str | None, typer.Option(help="With --preset: the dataset, KIND:PATH.")] = None,
    model: Annotated[str | None, typer.Option(help="With --preset: the architecture.")] = None,
    weights: Annotated[
        list[str] | None, typer.Option(help="With --preset: a weight origin (repeat for several).")
    ] = None,
    allow_code: Annotated[
        bool, typer.Option(help="Let a package.module:factory architecture in the file run its code.")
    ] = False,
    executor: ExecutorOption = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
) -> None:
    """Run a whole probing study from a TOML file (or a shipped preset), resumably.

    For every model (architecture x weight origin x seed), every selected layer and every attribute: the
    layer probe (PLS + QDA), VIP, the top-k channel and neuron probes, each top unit alone, the VIP study,
    and the ablation study when configured; Control_Random rides along as a control. Results go to
    OUT/results.parquet, vip_study.parquet and ablation.parquet (folders of Parquet parts), with
    OUT/manifest.json and OUT/draws.parquet. See the module docstring of faceprobe.run.config for every key.
    """
    from faceprobe.errors import FaceprobeError
    from faceprobe.run.config import load_config
    from faceprobe.run.folder import run_folder
    from faceprobe.run.presets import preset_config

    if (config is None) == (preset is None):
        raise FaceprobeError("give a study file or --preset NAME (e.g. faceprobe run --preset thesis ...)")
    if out is None:
        if config is None:
            raise FaceprobeError(f"--preset {preset} needs --out RUN, the run folder")
        out = config.with_suffix("")
    out = run_folder(out)  # before the study, its data or torch load
    if preset is not None:
        study = preset_config(preset, data, model, tuple(weights or ()), allow_code)
    else:
        assert config is not None
        study = load_config(config, allow_code)
    _run(study, out, executor, scheduler, workers)


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
    weights: Annotated[
        str,
        typer.Option(
            help="random | imagenet | checkpoint:PATH | epochs:DIR (every epoch a training folder kept with "
            "faceprobe train recognition --save-every, one model each)"
        ),
    ] = "random",
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
    components: Annotated[int, typer.Option(min=1, help="PLS components of every probe (thesis: 8).")] = 8,
    top_k: Annotated[int, typer.Option(min=1, help="Top VIP channels and neurons probed again.")] = 8,
    ablate: Annotated[
        str | None,
        typer.Option(
            help="Ablation study (Table 5.4) at these layers: catalogue depths or layer names, "
            "comma-separated (see faceprobe layers MODEL)."
        ),
    ] = None,
    ablation_fractions: Annotated[
        str, typer.Option(help="Shares of the top-VIP neurons zeroed, comma-separated.")
    ] = "0.01,0.05,0.10",
    ablation_attributes: Annotated[
        str, typer.Option(help="Attributes of the ablation study, comma-separated, or all.")
    ] = "all",
    controls: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="Random-label controls probed like attributes (Control_Random, Control_Random_2, ...): "
            "each curve's chance-level reference, their spread with more than one.",
        ),
    ] = 1,
    skip_bad_images: Annotated[
        bool, typer.Option(help="Leave out missing or corrupt images and list them in the manifest.")
    ] = False,
    memory_gb: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="RAM a work unit may hold its layers of the train images in (default: three quarters of the "
            "free RAM); wider ones go to the on-disk activation store in OUT/store (0: always).",
        ),
    ] = None,
    disk_gb: Annotated[
        float,
        typer.Option(
            min=0,
            help="Disk the run may fill (0: the free space of OUT's disk less 10%); the widest layers that "
            "do not fit are streamed through the network instead, one forward pass per pass of their fits.",
        ),
    ] = 0.0,
    mode: Annotated[
        str,
        typer.Option(
            help="Where the train layers are held: auto (RAM, else the store, else streamed, as the budgets "
            "allow) | ram | store | stream. Results are the same in every mode.",
        ),
    ] = "auto",
    store_dtype: Annotated[
        str, typer.Option(help="float32 | float16 (half the disk; float16 can overflow on some layers).")
    ] = "float32",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="float32 | bfloat16 (forward passes under autocast, for GPUs).")
    ] = "float32",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    keep_store: Annotated[
        bool, typer.Option(help="Keep the activation store in OUT/store once the run is finished.")
    ] = False,
    baseline: Annotated[
        Path | None,
        typer.Option(help="baseline.parquet of `faceprobe train attributes`: the ceiling of Table 5.2."),
    ] = None,
    executor: ExecutorOption = None,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="Print what the study will cost, as faceprobe plan does, and stop: nothing is written.",
        ),
    ] = False,
) -> None:
    """Probe one network from flags: a one-off study without a TOML file.

    Writes OUT/results.parquet (a folder of Parquet parts) and OUT/manifest.json; the same command on the same
    OUT resumes a killed run. With --plan it prints each work unit's images, mode, RAM, disk and time instead.
    """
    from faceprobe.run.config import parse_config
    from faceprobe.run.folder import run_folder

    run_folder(out)  # before anything slow is loaded
    raw = {
        "data": {
            "spec": data,
            "attributes": "all" if attributes == "all" else attributes.split(","),
            "train": train,
            "val": val,
            "test": test,
            "seed": seed,
            "skip_bad_images": skip_bad_images,
            "controls": controls,
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
        "probe": {"vip_study": vip_study, "components": components, "top_k": top_k},
        "run": {
            "memory_gb": memory_gb,
            "disk_gb": disk_gb,
            "mode": mode,
            "store_dtype": store_dtype,
            "device": device,
            "batch_size": batch_size,
            "precision": precision,
            "allow_code": True,  # a factory typed on the command line is the user's own choice
            "keep_store": keep_store,
            "executor": executor.value if executor else None,
            "scheduler": scheduler,
            "workers": workers,
        },
    }
    if baseline is not None:
        raw["baseline"] = {"path": str(baseline)}
    if ablate is not None:
        depths = [_number(d) for d in ablate.split(",")]
        raw["ablation"] = {
            "depths": depths,
            "fractions": [_number(f) for f in ablation_fractions.split(",")],  # the config checks them
            "attributes": "all" if ablation_attributes == "all" else ablation_attributes.split(","),
        }
    raw["models"][0] = {k: v for k, v in raw["models"][0].items() if v is not None}
    raw["run"] = {k: v for k, v in raw["run"].items() if v is not None}
    study = parse_config(raw, "faceprobe probe")
    if plan:
        from faceprobe.cli.plan import print_plan

        print_plan(study, out, str(out))
        return
    _run(study, out, None, None, None)  # the executor flags are in the study


def _number(text: str) -> int | float | str:
    """A comma-separated item of a flag as the number it spells, else as given (the config judges it)."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@app.command(epilog="Example: faceprobe status runs/study")
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Show how far a run got (finished and pending work units) and what its folder holds on disk."""
    from faceprobe.run.folder import folder_sizes, run_status

    state = run_status(run_dir)
    table = Table(title=f"{escape(str(run_dir))}: {len(state.finished)}/{state.total} work units finished")
    table.add_column("unit", no_wrap=True)
    table.add_column("state")
    for unit in state.finished:
        table.add_row(escape(unit), "finished")
    for unit in state.pending:
        table.add_row(escape(unit), "pending")
    out_console.print(table)
    sizes = folder_sizes(run_dir, _store_name(run_dir))
    out_console.print("on disk: " + ", ".join(f"{part} {_gib(size)}" for part, size in sizes.items()))
    if not state.complete:
        out_console.print("resume with the same `faceprobe run` (or `faceprobe probe`) command")


@app.command(epilog="Example: faceprobe clean runs/study --all-but-tables")
def clean(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    store: Annotated[
        bool, typer.Option("--store", help="Delete the activation store (what clean does by default).")
    ] = True,
    all_but_tables: Annotated[
        bool, typer.Option("--all-but-tables", help="Also delete the report (faceprobe report rewrites it).")
    ] = False,
) -> None:
    """Delete a run's activation store (and with --all-but-tables its report); the tables stay.

    Refused while a process runs in the folder. Tables, draws and the manifest are never touched: reports
    and compare need nothing else, and an unfinished run extracts again what it needs when resumed.
    """
    from faceprobe.run.folder import reclaim, run_status

    run_status(run_dir)  # a run folder, or one line saying it is none
    del store  # the store always goes: the flag spells out the default
    freed = reclaim(run_dir, _store_name(run_dir), report=all_but_tables)
    out_console.print(f"freed {_gib(freed)} in {run_dir}", markup=False)


def _store_name(run_dir: Path) -> str:
    """The store folder the run's manifest records (``store`` when it says none)."""
    import json

    manifest = (
        json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    )
    return str(manifest.get("config", {}).get("run", {}).get("store", "store"))
