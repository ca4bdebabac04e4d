"""Atomic file writes: a reader (or a rerun after a crash) sees the old file or the new one, never half.

A file is written as a temporary file in the same folder (so the final rename stays on one file system),
flushed to disk with ``fsync``, then renamed over the target with :func:`os.replace`; on any failure the
temporary file is removed. Temporary names start with a dot and end in ``.tmp``: pandas and pyarrow skip
such files when they read a folder of Parquet parts, so one left by a process killed mid-write is never
read as data. A full disk (``ENOSPC``, or ``EDQUOT`` for a quota) becomes a :class:`FaceprobeError`
naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceprobe.errors import FaceprobeError

__all__ = [
    "DISK_FULL",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_error",
    "writing",
]

#: errno values that mean "no room left": the device is full or the user's quota is spent.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full_error(path: str | os.PathLike[str] | None, err: OSError) -> FaceprobeError:
    """The one-line error for a write to ``path`` that ran out of space.

    ``path`` is the file being written; without it (None, or ``err.filename``) the message still says
    what happened and what to do, but name the path whenever it is known: wrap writes that go through a
    file descriptor (``os.write``, ``os.pwrite``, ``file.write``, ``fsync``), whose errors carry no file
    name, in :func:`writing`.
    """
    reason = os.strerror(err.errno) if err.errno else str(err)
    path = path if path is not None else err.filename
    if path is None:
        return FaceprobeError(
            f"disk full ({reason}) while writing; free space on the output's disk and run again"
        )
    return FaceprobeError(f"{os.fsdecode(path)}: disk full ({reason}); free space and run again")


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name ``path`` in the errors of the writes in the body.

    A full disk (or quota) becomes :func:`disk_full_error` naming ``path``; any other :class:`OSError`
    without a file name (``os.write`` and ``file.write`` set none) gets ``path`` as its ``filename`` and
    is raised again, so whoever reports it can name the file.
    """
    try:
        yield
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full_error(path, err) from None
        if err.filename is None:
            err.filename = os.fspath(path)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; on success it replaces ``path`` whole.

    If the body raises, or the flush or the rename fails, the temporary file is removed and ``path`` is
    left as it was. Raises :class:`FaceprobeError` when the disk (or quota) is full.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with writing(path):  # the temporary file's errors name the file the user asked for
            yield tmp
            _fsync(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _fsync(path: Path) -> None:
    """Flush a written file to disk, so the rename cannot land before its content after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; folders cannot be opened on some systems (Windows), where this is a no-op."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):  # some file systems refuse it; the rename has happened anyway
        os.fsync(fd)
    os.close(fd)
