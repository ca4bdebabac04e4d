"""`faceprobe synth`: synthetic faces with planted attributes, in CelebA's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faceprobe.cli._app import app, out_console, progress_bars, stepper


@app.command(epilog="Example: faceprobe synth --out /tmp/faces --identities 100 --images-per-identity 30")
def synth(
    out: Annotated[Path, typer.Option(help="Folder to write (CelebA layout).")],
    identities: Annotated[int, typer.Option(min=1, help="Number of distinct people.")] = 100,
    images_per_identity: Annotated[int, typer.Option(min=1, help="Images of each person.")] = 30,
    size: Annotated[int, typer.Option(min=32, help="Image width and height in pixels.")] = 112,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    yaw_and_age: Annotated[
        bool, typer.Option(help="Also draw a yaw per image and an age per identity, and plant both.")
    ] = False,
) -> None:
    """Generate synthetic aligned faces with planted attributes and identities, in CelebA's layout.

    Each identity fixes its face shape, eyes, nose, lips, skin, eyebrows, hair and beard; each image varies
    pose, lighting, background, expression and accessories (glasses, hat, earrings, necklace, necktie,
    lipstick). Labels use CelebA's attribute names plus Control_Random (random labels). The folder holds
    img_align_celeba/, list_attr_celeba.txt, identity_CelebA.txt and list_eval_partition.txt, so every
    command that reads CelebA reads it too.

    targets.csv plants targets of other kinds, probed as folder:OUT/targets.csv: Head_Roll (the face's
    in-plane angle), Lighting and Skin_Tone (continuous), Hair_Color (four classes) and Random_Value (a
    continuous control nothing drawn depends on). With --yaw-and-age also Yaw (the head turned out of the
    image plane, degrees) and Age (years, per identity: lines and greying hair); without it the images and
    label files are those of earlier versions, byte for byte. A synthetic:OUT study probes these columns
    where it names them.
    """
    from faceprobe.data.synth import generate

    with progress_bars() as progress:
        path = generate(
            out,
            identities,
            images_per_identity,
            size,
            seed,
            workers,
            progress=stepper(progress)("synthesising faces", identities * images_per_identity),
            yaw_and_age=yaw_and_age,
        )
    out_console.print(f"wrote {identities * images_per_identity} faces to {path}", markup=False)
