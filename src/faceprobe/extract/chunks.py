"""The chunk files of a stored layer: raw values + CRC32C, read, mapped, checked and written without zarr.

An uncompressed layer's chunk file is what zarr's ``bytes`` (little-endian) and ``crc32c`` codecs make of
it: the chunk's raw values, then the CRC32C of those bytes. faceprobe reads and writes such files itself,
because zarr's per-chunk allocations, copies and event loop cost more than the probes' passes on wide
layers and slow the extraction down; zarr reads the same files, and decodes the compressed layers.

A file that cannot be what was written (wrong size, failed checksum, undecodable) raises
:class:`BadChunk`, whether faceprobe or zarr read it. A chunk is written through a temporary file and a
rename, with O_DIRECT where the filesystem takes it; the temporary files of a killed writer are recognised
(:func:`_stale`) and deleted by the next extraction.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr import AsyncArray
from zarr.abc.buffer import Buffer, NDBuffer
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.storage import LocalStore

from faceprobe.atomic import writing

__all__ = ["BadChunk"]


class BadChunk(Exception):
    """A chunk file whose size, checksum or encoding shows that it is not what was written.

    ``path`` is the file, or None where zarr found it (its codecs are not told which file they decode).
    """

    def __init__(self, path: Path | None, problem: str) -> None:
        super().__init__(problem if path is None else f"{path}: {problem}")
        self.path = path


#: The codecs of an uncompressed layer: raw little-endian values, then the CRC32C of those bytes.
_PLAIN_CODECS = (BytesCodec(endian="little"), Crc32cCodec())


def _plain(array: zarr.Array) -> bool:
    """Whether ``array`` is an uncompressed layer on the local disk, whose chunks faceprobe writes itself."""
    return (
        sys.byteorder == "little"
        and tuple(array.metadata.codecs) == _PLAIN_CODECS
        and isinstance(array.store_path.store, LocalStore)
    )


def _chunk_file(array: zarr.Array, key: tuple[int, ...]) -> Path:
    """Where the local store of ``array`` keeps the chunk ``key``."""
    root = Path(str(array.store_path.store.root))  # type: ignore[attr-defined]
    return root / array.path / array.metadata.encode_chunk_key(key)


class _Decoding(BatchedCodecPipeline):
    """zarr's codec pipeline, raising :class:`BadChunk` for the stored bytes it cannot decode.

    zarr (3.1) has no exception type for a bad chunk: its crc32c codec raises a plain ValueError when the
    checksum does not match (the file changed, or is cut short or too long), the bytes codec a ValueError
    when the values do not fill the chunk, and Blosc a RuntimeError on bytes it cannot decompress. Caught
    around the decoding alone, they cannot be mistaken for a bad selection or a failing disk.
    """

    async def decode_batch(
        self, chunk_bytes_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]
    ) -> Iterable[NDBuffer | None]:
        try:
            return await super().decode_batch(chunk_bytes_and_specs)
        except (ValueError, RuntimeError) as error:
            raise BadChunk(None, f"zarr cannot decode it: {error}") from error


def _decoding(array: zarr.Array) -> AsyncArray:
    """``array`` read through :class:`_Decoding`: where zarr cannot decode a chunk, :class:`BadChunk`."""
    decoding = AsyncArray(array.metadata, array.store_path, array.async_array.config)
    # zarr's own __init__ sets the pipeline so; a pipeline class can otherwise only be chosen process-wide
    object.__setattr__(decoding, "codec_pipeline", _Decoding.from_codecs(array.metadata.codecs))
    return decoding


def _read_chunk(path: Path, chunk: np.ndarray, check: bool) -> bool:
    """Read a chunk file written by :func:`_write_atomically` into ``chunk``; False if there is none.

    Raises:
        BadChunk: the file does not have the chunk's size, or (with ``check``) fails its checksum.
    """
    data = chunk.reshape(-1).view(np.uint8)
    tail = bytearray(4)
    try:
        with path.open("rb", buffering=0) as file:
            complete = file.readinto(data) == data.nbytes and file.readinto(tail) == 4
            complete = complete and not file.read(1)
    except FileNotFoundError:
        return False
    if not complete:
        raise BadChunk(path, "not a whole chunk")
    _check(path, data, tail, check)
    return True


def _map_chunk(path: Path, nbytes: int, check: bool) -> np.ndarray | None:
    """The ``nbytes`` of a chunk file mapped into memory (no copy), or None if there is none.

    The mapping is copy-on-write: a write to the array never reaches the file, and the array is writable,
    so torch can wrap it without a warning.

    Raises:
        BadChunk: as :func:`_read_chunk`.
    """
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size != nbytes + 4:
                raise BadChunk(path, "not a whole chunk")
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)  # writes stay private
    except FileNotFoundError:
        return None
    data = np.frombuffer(mapped, np.uint8, count=nbytes)
    _check(path, data, mapped[nbytes:], check)
    return data


def _check(path: Path, data: np.ndarray, tail: bytes | bytearray, check: bool) -> None:
    if check and google_crc32c.value(data) != int.from_bytes(tail, "little"):
        raise BadChunk(path, "stored and computed checksum do not match")


def _write_atomically(path: Path, data: np.ndarray) -> None:
    """Write ``data`` and its CRC32C (little-endian) to ``path`` through a temporary file, as zarr does.

    The chunk is on disk before the rename, so a power cut never leaves a chunk named but empty. It goes
    straight from ``data`` to the disk (:func:`_write_direct`) where the filesystem allows it; otherwise it is
    written through the page cache, flushed and dropped from it, so the kernel reuses those pages for the
    next chunk instead of taking fresh ones (on VMs that back guest memory lazily that costs more than the
    write itself). Readers fetch the chunk from disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{_HOST}.{os.getpid()}.{uuid.uuid4().hex}.partial")  # see _stale
    checksum = google_crc32c.value(data).to_bytes(4, "little")
    try:
        with writing(path):  # a full disk names the chunk, not "a file"
            if not _write_direct(partial, data, checksum):
                with partial.open("wb") as file:
                    file.write(data)
                    file.write(checksum)
                    file.flush()
                    getattr(os, "fdatasync", os.fsync)(file.fileno())  # macOS has no fdatasync
                    if hasattr(os, "posix_fadvise"):  # nor posix_fadvise
                        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


#: This machine in the names of chunks being written (dots would split the name): see :func:`_stale`.
_HOST = socket.gethostname().replace(".", "_")


def _stale(partial: Path) -> bool:
    """Whether a chunk file being written (``CHUNK.HOST.PID.UUID.partial``) was left by a dead local process.

    A kill during a write leaves that file behind; the batch is not marked done and is written again under
    a new name. Only a writer of the same host can tell that the PID is gone (another machine's, or a live
    process's, may still be writing), so anything else is kept.
    """
    fields = partial.name.split(".")
    if os.name != "posix" or len(fields) < 5 or fields[-4] != _HOST or not fields[-3].isdigit():
        return False
    try:
        os.kill(int(fields[-3]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


#: O_DIRECT's alignment of buffer addresses, file offsets and lengths: the largest logical block in use.
_ALIGN = 4096
#: Devices (``st_dev``) whose filesystem refused O_DIRECT (tmpfs, for one): not asked again.
_NO_DIRECT: set[int] = set()


def _aligned(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialised memory starting at a multiple of ``_ALIGN``, as O_DIRECT needs."""
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start : start + nbytes]


def _write_direct(path: Path, data: np.ndarray, checksum: bytes) -> bool:
    """Write ``data`` + ``checksum`` to a new file with O_DIRECT; False, with nothing written, where it can't.

    The disk reads the chunk from ``data`` itself: no copy into the page cache, a third of the CPU time of a
    buffered write and twice its throughput on the benchmark machine (docs/benchmarks.md). The whole blocks
    come straight from ``data`` (which must start at a multiple of ``_ALIGN``); its last partial block and
    the checksum go through one zero-padded block, and the file is then cut to its true length.
    """
    flag = getattr(os, "O_DIRECT", 0)  # Linux and FreeBSD
    device = path.parent.stat().st_dev
    if not flag or data.ctypes.data % _ALIGN or device in _NO_DIRECT:
        return False
    whole = data.nbytes - data.nbytes % _ALIGN
    last = _aligned(-(-(data.nbytes - whole + len(checksum)) // _ALIGN) * _ALIGN)
    last[: data.nbytes - whole] = data[whole:]
    last[data.nbytes - whole : data.nbytes - whole + len(checksum)] = np.frombuffer(checksum, np.uint8)
    last[data.nbytes - whole + len(checksum) :] = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o666)
        try:
            done = 0
            while done < whole:  # a single write may stop short (Linux: at 2 GiB)
                done += os.pwrite(fd, data[done:whole], done)
            os.pwrite(fd, last, whole)
            os.ftruncate(fd, data.nbytes + len(checksum))
            os.fdatasync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        if error.errno != errno.EINVAL:  # refused at open, or blocks larger than _ALIGN at write
            raise
        _NO_DIRECT.add(device)
        return False
    return True
