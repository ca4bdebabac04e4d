"""Train SmallFaceNet on synthetic faces; print the training time and the held-out identity accuracy.

The demo's promise is a face-recognition model good enough to probe (>= 90% identity accuracy on images it
never saw) in a few CPU minutes. This checks it: it generates a synthetic set, holds out about 20% of each
identity's images, trains on the rest with the thesis recipe and reports::

    python benchmarks/bench_train_synth.py                # the demo configuration
    python benchmarks/bench_train_synth.py --epochs 10 --size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from _epochs import epoch_printer
from faceprobe.data import FaceImages, eval_transform, generate, load_celeba
from faceprobe.models import SmallFaceNet
from faceprobe.train import train_recognition, train_transform
from faceprobe.train.data import held_out_split


def images(classes: pd.Series, root: Path, transform: Callable[[Image.Image], torch.Tensor]) -> FaceImages:
    return FaceImages(
        [root / "img_align_celeba" / name for name in classes.index], classes.to_numpy(), transform
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=50)
    parser.add_argument("--images", type=int, default=30, help="images per identity")
    parser.add_argument("--size", type=int, default=64, help="input size the network sees")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="an existing synthetic set (default: generate a new one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            start = time.perf_counter()
            root = generate(Path(tmp) / "synth", args.identities, args.images, size=112, seed=args.seed)
            print(
                f"generated {args.identities} x {args.images} images in {time.perf_counter() - start:.1f} s"
            )
        identities = load_celeba(root).identities
        # CelebA's identity numbers -> classes 0..k-1
        classes = pd.Series(pd.factorize(identities, sort=True)[0], index=identities.index)
        train, test = held_out_split(classes, 0.2, args.seed)
        print(
            f"{identities.nunique()} identities, {len(train)} training and {len(test)} held-out images,"
            f" input {args.size}px, widths {args.widths}, {args.epochs} epochs, lr {args.lr},"
            f" {torch.get_num_threads()} threads"
        )
        torch.manual_seed(args.seed)
        model = SmallFaceNet(identities.nunique(), widths=args.widths)
        start = time.perf_counter()

        report = epoch_printer(start)

        result = train_recognition(
            model,
            images(train, root, train_transform(args.size)),
            images(test, root, eval_transform(args.size)),
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            workers=args.workers,
            progress=report,
        )
        seconds = time.perf_counter() - start
    print(f"time {seconds:.1f} s  held-out identity accuracy {result.val_acc:.3f}")


if __name__ == "__main__":
    main()
