"""`faceprobe plan`: what a study will cost before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from faceprobe.cli._app import app, out_console

if TYPE_CHECKING:
    from faceprobe.run.config import RunConfig


@app.command(epilog="Example: faceprobe plan study.toml --out runs/study")
def plan(
    config: Annotated[Path, typer.Argument(help="The study file (.toml).")],
    out: Annotated[
        Path | None, typer.Option(help="The run folder (its disk sets the default budget); default: beside.")
    ] = None,
    allow_code: Annotated[bool, typer.Option(help="Allow package.module:factory architectures.")] = False,
) -> None:
    """Print each work unit's images, features, mode (RAM, store or stream), RAM, disk and time.

    Nothing is run or written: the study is checked and drawn as `faceprobe run` would, the times come from
    a calibration of a few seconds on this machine (each network's forward, a PLS pass, the disk), and the
    end says whether the study fits `run.disk_gb` (default: the free space of the run folder's disk less 10%).
    """
    from faceprobe.run.config import load_config

    print_plan(load_config(config, allow_code), out or config.with_suffix(""), config.name)


def print_plan(study: RunConfig, run_dir: Path, name: str) -> None:
    """The plan's table and budgets, shared by `faceprobe plan` and `faceprobe probe --plan` so that a study
    given as flags is planned exactly as the same study in a file; nothing is written to ``run_dir``."""
    from faceprobe.run.cost import disk_budget, free_memory, memory_budget, peak_disk
    from faceprobe.run.runner import study_costs

    costs = study_costs(study, run_dir)
    table = Table(title=f"{escape(name)}: work units")
    numbers = ("layers", "features", "train images", "evaluation images", "forwards", "RAM", "disk", "time")
    for column in ("unit", "mode", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for c in costs:
        table.add_row(
            escape(c.unit),
            c.mode,
            str(c.layers),
            f"{c.features:,}",
            f"{c.train_images:,}",
            f"{c.evaluation_images:,}",
            str(c.forwards),
            _size(c.ram_bytes),
            _size(c.disk_bytes),
            _duration(c.seconds),
        )
    out_console.print(table)
    budget, peak = disk_budget(study, run_dir), peak_disk(costs)
    verdict = "fits" if peak <= budget else "does NOT fit: faceprobe run will refuse it"
    streamed = sum(len(c.streamed) for c in costs)
    if streamed:
        verdict += f" ({streamed} layers streamed through the network instead of stored)"
    ram, free = max((c.ram_bytes for c in costs), default=0), free_memory(study)
    ram_verdict = "fits" if ram <= free else "does NOT fit: faceprobe run will refuse it"
    out_console.print(
        f"peak disk {_size(peak)} of a {_size(budget)} budget: {verdict}; peak RAM {_size(ram)} of "
        f"{_size(free)} free: {ram_verdict} (a unit may hold its layers in {_size(memory_budget(study))}); "
        f"estimated time {_duration(sum(c.seconds for c in costs))}"
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
