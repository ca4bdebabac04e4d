"""Figures written by worker processes while the page goes on being built.

matplotlib draws a figure on one core, twice (PNG and SVG), and a report has dozens of figures: drawing
them took most of a report's time. Each figure is pickled as soon as it is made (a pickled figure draws the
same bytes, tested) and drawn by one of loky's reusable workers, one per CPU, so the main process builds the
next figure and the tables meanwhile. loky's workers never run the caller's ``__main__`` again, so a script
without a ``__main__`` guard may build reports. On Linux a worker dies with the process that started it, so a
killed report leaves no process behind. With one CPU, figures are saved in the calling process.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from concurrent.futures import Future
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from loky import cpu_count, get_reusable_executor
from matplotlib.figure import Figure

from faceprobe.report.figures import save_figure

__all__ = ["FigureSaver"]

_MAX_WORKERS = 8  # each holds matplotlib and pandas (about 100 MB); more rarely pay for themselves
_IDLE_SECONDS = 60  # a worker left idle this long exits; the next report starts it again in a second


class FigureSaver:
    """``save(fig, stem, data)`` writes ``stem.png``, ``stem.svg`` and ``stem.csv`` as
    :func:`~faceprobe.report.figures.save_figure` does, in a worker; its future gives the paths.

    ``workers``: processes that draw (default: the CPUs this process may use, at most 8); 1 draws here.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers

    def save(self, fig: Figure, stem: Path, data: pd.DataFrame) -> Future[dict[str, Path]]:
        workers = min(cpu_count(), _MAX_WORKERS) if self.workers is None else self.workers
        if workers <= 1:
            done: Future[dict[str, Path]] = Future()
            done.set_result(save_figure(fig, stem, data))
            return done
        blob = pickle.dumps(fig)
        plt.close(fig)
        executor = get_reusable_executor(
            max_workers=workers, timeout=_IDLE_SECONDS, initializer=_die_with, initargs=(os.getpid(),)
        )
        return executor.submit(_save_pickled, blob, stem, data)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """A worker's start on Linux: the kernel kills it when ``parent`` dies. Without this, a worker of a
    killed report lived on, holding the pipes of whoever ran it (loky's idle timeout did not end one in 53
    minutes)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # died before the request took effect
            os._exit(1)


def _save_pickled(blob: bytes, stem: Path, data: pd.DataFrame) -> dict[str, Path]:
    return save_figure(pickle.loads(blob), stem, data)
