"""`faceprobe report` and `faceprobe compare`: the thesis's figures and tables from run folders, as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceprobe.cli._app import app, out_console

_GROUPS_HELP = (
    'JSON file of attribute groups, e.g. {"Hair": ["Black_Hair", "Blond_Hair"]} (default: the thesis\'s).'
)
_BASELINE_HELP = (
    "The multitask baseline: the baseline.parquet that `faceprobe train attributes` wrote, or its output "
    "folder. Replaces the run's own RUN/baseline.parquet; Table 5.2 then shows baseline and gap columns."
)


_SELECTIVITY_HELP = (
    "Draw the accuracy-over-depth figures as selectivity: each accuracy less the random-label controls' "
    "mean at the same layer (0: no better than on random labels)."
)


def _write(
    runs: list[Path], out: Path, groups: Path | None, baseline: Path | None, selectivity: bool = False
) -> None:
    from faceprobe.report.groups import DEFAULT_GROUPS, read_groups
    from faceprobe.report.html import build_report, coinciding_runs
    from faceprobe.report.run import load_run, with_baseline
    from faceprobe.results import read_baseline

    loaded = [load_run(run) for run in runs]
    if baseline is not None:
        table = read_baseline(baseline)
        loaded = [with_baseline(run, table) for run in loaded]
    chosen = read_groups(groups) if groups else DEFAULT_GROUPS
    index = build_report(loaded, out, chosen, selectivity=selectivity)
    out_console.print(
        f"wrote {index} (figures in {out / 'figures'}, tables in {out / 'tables'})", markup=False
    )
    for text in coinciding_runs(loaded):  # one curve hidden under another: say it where it is seen first
        out_console.print(f"note: {text}", markup=False, highlight=False, soft_wrap=True)


@app.command(epilog="Example: faceprobe report runs/resnet50 --out /tmp/report")
def report(
    run: Annotated[Path, typer.Argument(help="Run folder (results.parquet, manifest.json, ...).")],
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: RUN/report).")] = None,
    groups: Annotated[Path | None, typer.Option(help=_GROUPS_HELP)] = None,
    baseline: Annotated[Path | None, typer.Option(help=_BASELINE_HELP)] = None,
    selectivity: Annotated[bool, typer.Option("--selectivity", help=_SELECTIVITY_HELP)] = False,
) -> None:
    """Write the run's report: OUT/index.html (self-contained, opens from disk), figures and tables.

    First a summary: every warning of the run in one box, an attribute x layer heat map, the best layer per
    attribute with its 95% interval, and the control's ceiling. Then accuracy over depth per attribute
    (layer, top-8 channels, top-8 neurons; 95% intervals shaded), attribute groups, the
    residual-block view, weight origins, VIP scores, best units against the baseline, representation
    averages, selectivity against the random-label controls, ablation drops and the manifest, each averaged
    over the seeds of a model variant; sections whose tables the run lacks say so.
    """
    _write([run], out or run / "report", groups, baseline, selectivity)


@app.command(epilog="Example: faceprobe compare runs/resnet50 runs/vgg16 --out /tmp/compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to overlay.")],
    out: Annotated[Path, typer.Option(help="Folder to write.")],
    groups: Annotated[Path | None, typer.Option(help=_GROUPS_HELP)] = None,
    baseline: Annotated[Path | None, typer.Option(help=_BASELINE_HELP)] = None,
    selectivity: Annotated[bool, typer.Option("--selectivity", help=_SELECTIVITY_HELP)] = False,
) -> None:
    """Overlay several runs (architectures, weight origins, seeds) in one report at OUT/index.html."""
    _write(runs, out, groups, baseline, selectivity)
