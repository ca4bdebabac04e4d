"""Train a recognition network on the real CelebA sample; print the time and held-out identity accuracy.

Runs the job ``faceprobe train recognition`` runs (:func:`faceprobe.train.jobs.run_recognition`) on the
training partition of ``../shared/data/celeba-sample`` (real faces: 100 identities x 30 images, of which the
training partition holds 75 identities), holding out 20% of each identity's images::

    python benchmarks/bench_train_celeba_sample.py
    python benchmarks/bench_train_celeba_sample.py --epochs 40 --input-size 112 --model resnet18

It is the same as ``faceprobe train recognition --data celeba:PATH --model small --epochs 30
--input-size 64 --lr 0.1 --no-amp --out DIR``, timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _epochs import epoch_printer
from faceprobe.train.jobs import Recipe, run_recognition

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE, help="a folder in CelebA's layout")
    parser.add_argument("--model", default="small")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--head", default="softmax", help="softmax, arcface or cosface")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    recipe = Recipe(
        epochs=args.epochs, input_size=args.input_size, lr=args.lr, batch_size=args.batch_size, seed=args.seed
    )
    print(f"{args.model}, {recipe}, head {args.head}, {torch.get_num_threads()} threads", flush=True)
    start = time.perf_counter()

    report = epoch_printer(start)

    with tempfile.TemporaryDirectory() as out:
        metadata = run_recognition(
            out,
            f"celeba:{args.data}",
            args.model,
            recipe,
            head=args.head,
            amp=False,
            workers=args.workers,
            progress=report,
        )
    seconds = time.perf_counter() - start
    print(
        f"{len(metadata['identities'])} identities, {metadata['n_train']} training and"
        f" {metadata['n_held_out']} held-out images; kept epoch {metadata['best_epoch']}"
    )
    print(
        f"time {seconds:.1f} s  held-out identity accuracy"
        f" {metadata['metrics']['held_out_identity_accuracy']:.3f}"
    )


if __name__ == "__main__":
    main()
