"""One line per training epoch, shared by the training benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def epoch_printer(start: float) -> Callable[[dict], None]:
    """A ``progress`` callback that prints loss, accuracies, learning rate and elapsed time per epoch."""

    def report(event: dict) -> None:
        if event["event"] == "epoch":
            print(
                f"epoch {event['epoch']:3d}  loss {event['loss']:.3f}  train acc {event['train_acc']:.3f}"
                f"  held-out acc {event['val_acc']:.3f}  lr {event['lr']:.0e}"
                f"  {time.perf_counter() - start:6.1f} s",
                flush=True,
            )

    return report
