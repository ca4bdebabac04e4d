"""One process at a time in a run folder: a double start or two cluster jobs must not run the same units.

The lock is an advisory ``flock`` on ``RUN/.lock``, which the kernel drops when its process dies, so the lock
of a killed run is free at once; the file records who holds it, for the message a second process prints.
Dask workers of the holding process do not take it: they are part of that run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceprobe.atomic import writing
from faceprobe.errors import FaceprobeError

__all__ = ["LOCK_FILE", "RunInUse", "hold", "holder", "is_held"]

LOCK_FILE = ".lock"


class RunInUse(FaceprobeError):
    """Another process holds the run folder."""


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for the body; :class:`RunInUse`, naming the holder, when another process has it."""
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUse(
                f"{run_dir} is in use by {holder(run_dir)}; wait for it to finish or stop it, then run again"
            ) from None
        with writing(path):
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield
    finally:
        os.close(fd)  # closing drops the lock


def holder(run_dir: Path) -> str:
    """Who holds the lock of ``run_dir``, as recorded in the lock file ("another process" if unreadable)."""
    try:
        owner = json.loads((Path(run_dir) / LOCK_FILE).read_text())
        return f"process {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def is_held(run_dir: Path) -> bool:
    """Whether some process holds ``run_dir`` now (for commands that must not touch a running folder)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
