"""`faceprobe data check`: read a dataset as a run would, decode its images, and list what is wrong."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from faceprobe.cli._app import command_group, out_console, progress_bars, stepper

data_app = command_group("data", "Inspect datasets before a run.")

_CHUNK = 512


@data_app.command(epilog="Example: faceprobe data check celeba:/data/celeba --attributes Smiling,Male")
def check(
    data: Annotated[
        str,
        typer.Argument(
            metavar="KIND:PATH",
            help="celeba:DIR, synthetic:DIR, vggface2:DIR, lfw:DIR, or folder:IMAGES,LABELS.csv.",
        ),
    ],
    attributes: Annotated[
        str | None, typer.Option(help="Comma-separated attributes to count (default: all).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Decode only this many images, drawn at random (seed 0).")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Decoding threads (default: up to 8).")] = None,
) -> None:
    """Load a dataset, decode its images and report counts and problems.

    Label files are checked as every command checks them: a malformed one stops here with one line naming
    the file, the line and the fix. Images are then decoded in parallel; every missing, truncated or corrupt
    image is listed (a run stops at the first unless given --skip-bad-images). Exits with status 1 when
    some image is bad, so scripts can check a download.
    """
    import numpy as np

    from faceprobe.data.registry import load_dataset
    from faceprobe.data.sampling import attribute_labels, sample_protocol
    from faceprobe.targets import kind_of

    dataset = load_dataset(data, skip_bad_images=True)
    names = "all" if attributes is None else [a.strip() for a in attributes.split(",")]
    labels = None if dataset.attributes is None else attribute_labels(dataset, names)
    ids = dataset.ids
    if limit is not None and limit < len(ids):
        ids = ids[np.random.default_rng(0).choice(len(ids), limit, replace=False)]
    with progress_bars() as progress:
        advance = stepper(progress)("decoding images", len(ids))
        for start in range(0, len(ids), _CHUNK):
            dataset = dataset.scan(ids[start : start + _CHUNK], workers)
            advance(len(ids[start : start + _CHUNK]))

    out_console.print(  # a path is never wrapped: it stays one piece to copy
        f"{dataset.kind} dataset at {dataset.root}: {len(dataset.ids)} usable images",
        markup=False,
        soft_wrap=True,
    )
    if dataset.identities is not None:
        out_console.print(f"identities: {dataset.identities.nunique()}")
    if dataset.partitions is not None:
        counts = dataset.partitions.value_counts()
        out_console.print(
            "partitions: "
            + ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(("train", "val", "test")))
        )
    if dataset.boxes is not None:
        out_console.print(f"loose boxes: {len(dataset.boxes)} images")
    if labels is not None:
        labels = labels[labels.index.isin(dataset.ids)]
        draws = sample_protocol(dataset, list(labels.columns), scan=False).draws
        table = Table(title=f"attributes: {len(labels)} labelled images")
        for column in ("attribute", "positive", "negative", "thesis draw (of 8192)"):
            table.add_column(column, justify="left" if column == "attribute" else "right")
        for name, draw in draws.items():
            column = labels[name]
            if kind_of(column) == "binary":
                positive = int(column.sum())
                counts = (str(positive), str(len(labels) - positive))
            elif kind_of(column) == "multiclass":  # beyond binary: the kind where the counts would be
                counts = (f"{column.nunique()} classes", f"{int(column.isna().sum())} unlabelled")
            else:
                counts = (
                    f"continuous {column.min():.4g} to {column.max():.4g}",
                    f"{int(column.isna().sum())} unlabelled",
                )
            table.add_row(escape(name), *counts, str(len(draw.train) + len(draw.val)))
        out_console.print(table)
    if dataset.skipped:
        out_console.print(f"{len(dataset.skipped)} bad images:")
        for bad in dataset.skipped:
            out_console.print(
                f"  {dataset.image_path(bad.image_id)}: {bad.reason}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        raise typer.Exit(1)
    out_console.print("no bad images")
