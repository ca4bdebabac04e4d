"""`faceprobe train`: face-recognition networks by the thesis recipe, and the multitask attribute baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress

from faceprobe.cli._app import command_group, out_console, progress_bars

train_app = command_group(
    "train",
    (
        "Train the networks to probe: identity classifiers by the thesis recipe (softmax over identities, "
        "SGD), and the supervised multitask attribute baseline every probe is compared with.\n\n"
        "Both write DIR/model.safetensors and DIR/metadata.json and keep a resumable state in DIR/last/: run "
        "the same command again after an interruption to continue from the last finished epoch. On several "
        "GPUs start it under torchrun (torchrun --nproc-per-node 4 -m faceprobe.cli train ...)."
    ),
)

Data = Annotated[
    str,
    typer.Option(
        help="KIND:PATH of the dataset, e.g. celeba:/data/celeba, synthetic:/tmp/faces, vggface2:DIR."
    ),
]
Out = Annotated[
    Path, typer.Option(help="Folder for model.safetensors, metadata.json and the state in last/.")
]
Epochs = Annotated[
    int, typer.Option(min=1, help="Epochs to train (more than before continues a finished run).")
]
InputSize = Annotated[
    int,
    typer.Option(min=16, help="Network input in pixels: random crops of the shorter side at size*256/224."),
]
BatchSize = Annotated[int, typer.Option(min=1, help="Images per SGD step (per GPU under torchrun).")]
Lr = Annotated[float, typer.Option(min=0.0, help="Initial SGD learning rate, cut tenfold on a loss plateau.")]
Momentum = Annotated[float, typer.Option(min=0.0, help="SGD momentum.")]
WeightDecay = Annotated[float, typer.Option(min=0.0, help="SGD weight decay.")]
Patience = Annotated[int, typer.Option(min=0, help="Epochs without a lower training loss before the cut.")]
Seed = Annotated[int, typer.Option(help="Seed for the initialisation, the draws and the augmentation.")]
Workers = Annotated[
    int, typer.Option(min=0, help="Data-loading processes (0: load in the training process).")
]
Amp = Annotated[
    bool | None,
    typer.Option(help="Mixed precision: float16 on CUDA, bfloat16 on the CPU (default: on for CUDA only)."),
]
Device = Annotated[
    str | None,
    typer.Option(help="cpu, cuda or cuda:N (default: the GPU of this torchrun rank, else CUDA if any)."),
]


@train_app.command(
    epilog=(
        "Example: faceprobe train recognition --model small --data synthetic:/tmp/faces --epochs 30 "
        "--input-size 64 --lr 0.1 --out /tmp/small"
    )
)
def recognition(
    data: Data,
    out: Out,
    model: Annotated[
        str, typer.Option(help="Architecture: small, resnet18/34/50, mobilenet_v2, vgg16.")
    ] = "small",
    epochs: Epochs = 50,
    input_size: InputSize = 224,
    batch_size: BatchSize = 64,
    lr: Lr = 0.005,
    momentum: Momentum = 0.9,
    weight_decay: WeightDecay = 5e-4,
    patience: Patience = 2,
    grayscale: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of faces turned gray.")] = 0.2,
    head: Annotated[
        str, typer.Option(help="softmax (the thesis), or the margin heads arcface or cosface.")
    ] = "softmax",
    margin: Annotated[
        float | None, typer.Option(help="Margin of arcface/cosface (default 0.5 / 0.35, their papers').")
    ] = None,
    scale: Annotated[float, typer.Option(min=0.0, help="Logit scale of arcface/cosface.")] = 64.0,
    uniform_identities: Annotated[
        bool, typer.Option(help="Draw every identity equally often (the thesis), not every image.")
    ] = True,
    held_out: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of each identity's images held out to measure accuracy."),
    ] = 0.2,
    lfw: Annotated[
        Path | None,
        typer.Option(help="LFW folder (lfw/ and pairs.txt): keep the epoch best at LFW verification."),
    ] = None,
    save_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also keep the network of epochs N, 2N, ... in DIR/epochs/epoch-NNNN (checkpoints), to "
            "probe across training with weights epochs:DIR (0: keep none).",
        ),
    ] = 0,
    seed: Seed = 0,
    workers: Workers = 0,
    amp: Amp = None,
    device: Device = None,
) -> None:
    """Train a face-recognition network on the identities of a dataset's training partition.

    The thesis recipe is the default: softmax over identities drawn uniformly, 20% of the faces gray, the
    shorter side resized to 256 and a random 224 crop (scaled to --input-size), SGD with lr 0.005 and momentum
    0.9 cut tenfold when the loss plateaus, batches of 64, 50 epochs. The epoch kept is the one with the best
    LFW verification accuracy with --lfw, else the best accuracy on the held-out images of the training
    identities. With --save-every N the networks of epochs N, 2N, ... are kept as well (a resumed run keeps
    those already saved), so that `faceprobe probe --weights epochs:DIR` probes how training shaped them.
    """
    from faceprobe.train.jobs import Recipe, run_recognition

    recipe = Recipe(epochs, input_size, batch_size, lr, momentum, weight_decay, patience, grayscale, seed)
    with progress_bars() as progress:
        metadata = run_recognition(
            out,
            data,
            model,
            recipe,
            head=head,
            scale=scale,
            margin=margin,
            uniform_identities=uniform_identities,
            held_out=held_out,
            lfw=lfw,
            save_every=save_every,
            device=_device(device),
            amp=amp,
            workers=workers,
            progress=_reporter(progress, epochs),
        )
    metrics = metadata["metrics"]
    lfw_text = f", LFW verification {metrics['lfw_verification_accuracy']:.1%}" if lfw is not None else ""
    epochs_text = ""
    if save_every:
        from faceprobe.models.checkpoint import EPOCHS_DIR, kept_epochs

        kept = ", ".join(str(epoch) for epoch, _ in kept_epochs(out))
        epochs_text = f"; epochs {kept} in {out / EPOCHS_DIR}" if kept else ""
    out_console.print(
        f"kept epoch {metadata['best_epoch']}: held-out identity accuracy "
        f"{metrics['held_out_identity_accuracy']:.1%}{lfw_text}; wrote {out}{epochs_text}",
        markup=False,
    )


@train_app.command(
    epilog="Example: faceprobe train attributes --model resnet50 --data celeba:/data/celeba --out /tmp/base"
)
def attributes(
    data: Data,
    out: Out,
    model: Annotated[
        str, typer.Option(help="Architecture: resnet50 (the thesis), or any other.")
    ] = "resnet50",
    epochs: Epochs = 50,
    input_size: InputSize = 224,
    batch_size: BatchSize = 64,
    lr: Lr = 0.005,
    momentum: Momentum = 0.9,
    weight_decay: WeightDecay = 5e-4,
    patience: Patience = 2,
    grayscale: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of faces turned gray (0: colours are attributes).")
    ] = 0.0,
    seed: Seed = 0,
    workers: Workers = 0,
    amp: Amp = None,
    device: Device = None,
) -> None:
    """Train the supervised multitask baseline: one network predicting every attribute at once (BCE).

    Trains on the labelled images of the training partition, keeps the epoch with the best mean accuracy on
    the validation partition, and writes each attribute's test-partition accuracy to DIR/baseline.parquet:
    the ceiling the reports compare every probe with.
    """
    from rich.table import Table

    from faceprobe.train.jobs import BASELINE_FILE, Recipe, run_attributes

    recipe = Recipe(epochs, input_size, batch_size, lr, momentum, weight_decay, patience, grayscale, seed)
    with progress_bars() as progress:
        table = run_attributes(
            out,
            data,
            model,
            recipe,
            device=_device(device),
            amp=amp,
            workers=workers,
            progress=_reporter(progress, epochs),
        )
    view = Table(title=f"test accuracy per attribute ({escape(str(out / BASELINE_FILE))})")
    view.add_column("attribute")
    view.add_column("accuracy", justify="right")
    for row in table.itertuples():
        view.add_row(escape(row.attribute), f"{row.accuracy:.1%}")
    out_console.print(view)


def _device(device: str | None) -> Any:
    """The training device; under torchrun, after joining the process group (also with an explicit device)."""
    from faceprobe.train.loop import init_distributed

    return init_distributed(device)


def _reporter(progress: Progress, epochs: int) -> Callable[[dict[str, Any]], None]:
    """A progress callback: one bar per epoch with the running loss and accuracy, then the epoch's line."""
    bars: dict[int, Any] = {}

    def report(event: dict[str, Any]) -> None:
        epoch = event["epoch"]
        if event["event"] == "step":
            if epoch not in bars:
                bars[epoch] = progress.add_task("", total=event["steps"])
            progress.update(
                bars[epoch],
                completed=event["step"],
                description=f"epoch {epoch}/{epochs}  loss {event['loss']:.3f}  acc {event['acc']:.1%}",
            )
        else:
            val = "" if event["val_acc"] is None else f"  held-out acc {event['val_acc']:.1%}"
            score = f"  score {event['score']:.1%}" if "score" in event else ""
            progress.console.print(
                f"epoch {epoch}/{epochs}  loss {event['loss']:.3f}  train acc {event['train_acc']:.1%}"
                f"{val}{score}  lr {event['lr']:.0e}",
                highlight=False,
            )

    return report
