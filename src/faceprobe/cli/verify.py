"""`faceprobe verify`: check that a recognition network works on your images before probing it."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.markup import escape

from faceprobe.cli._app import app, console, out_console, progress_bars, stepper
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


@app.command(
    epilog="Example: faceprobe verify --model iresnet50 --weights checkpoint:r50.pth --data celeba:DIR"
    " --crop 25,50,153,178"
)
def verify(
    model: Annotated[str, typer.Option(help="A registered architecture or package.module:factory.")],
    data: Annotated[
        str, typer.Option(help="Identity-labelled images as KIND:PATH, e.g. celeba:/data/celeba.")
    ],
    weights: WeightsOption = "random",
    identities: Annotated[int, typer.Option(min=2, help="People to draw (each with 2+ images).")] = 100,
    per_identity: Annotated[int, typer.Option(min=2, help="Images drawn per person.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    format: FormatOption = OutputFormat.table,
    input_size: InputSizeOption = None,
    crop: CropOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    bgr: BgrOption = None,
    non_strict: NonStrictOption = False,
) -> None:
    """Check that a face-recognition network tells the people in your images apart.

    Reports the mean cosine similarity of the embeddings of same-identity and different-identity pairs and
    the nearest-neighbour identity accuracy (with its chance level), and, on LFW (pairs.txt present), the
    10-fold verification accuracy. A loud warning says when same and different identities are about equally
    similar: random or mis-loaded weights, or a crop, size or normalisation the network was not trained on.
    """
    from faceprobe.data.lfw import PAIRS_FILE
    from faceprobe.data.registry import load_dataset
    from faceprobe.devices import fit_batch_size, resolve_device
    from faceprobe.errors import FaceprobeError
    from faceprobe.verification import check_identities, check_lfw_pairs, embed, pick_images

    loaded = load_from_options(model, weights, input_size, crop, mean, std, bgr, non_strict)
    dataset = load_dataset(data)
    if dataset.identities is None:
        raise FaceprobeError(f"{data} has no identity labels; verify needs identity-labelled images")
    target = resolve_device(device)
    batch_size = fit_batch_size(loaded.module, (3, *loaded.preprocessing.input_size), target)
    drawn = pick_images(dataset.identities, identities, per_identity, seed)
    with progress_bars() as progress:
        step = stepper(progress)
        embeddings = embed(
            loaded, dataset, list(drawn.index), batch_size, target, step("embedding", len(drawn))
        )
        check = check_identities(embeddings, drawn.to_numpy())
        lfw = None
        if dataset.kind == "lfw" and (dataset.root / PAIRS_FILE).is_file():
            lfw = check_lfw_pairs(loaded, dataset, batch_size, target, step("LFW pairs", None))
    report = {"model": loaded.name, "digest": loaded.digest, "data": data, **dataclasses.asdict(check)}
    if lfw is not None:
        report["lfw_accuracy"], report["lfw_std"] = lfw.accuracy, lfw.std
    if format is OutputFormat.json:
        out_console.print_json(json.dumps(report))
    else:
        out_console.print(
            f"{loaded.name} on {check.n_images} images of {check.n_identities} people:\n"
            f"  mean cosine, same identity       {check.same:.3f}\n"
            f"  mean cosine, different identity  {check.different:.3f}\n"
            f"  nearest-neighbour identity       {check.nearest_neighbour:.1%} (chance {check.chance:.1%})"
            + (
                ""
                if lfw is None
                else f"\n  LFW 10-fold verification         {lfw.accuracy:.1%} ± {lfw.std:.1%}"
            ),
            highlight=False,
            markup=False,
        )
    if check.warning:
        console.print(
            f"[bold red]WARNING:[/bold red] {escape(check.warning)}", highlight=False, soft_wrap=True
        )
