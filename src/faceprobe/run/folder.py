"""A run folder's parts: which units are finished, their sizes on disk, and reclaiming what the tables no
longer need.

The activation store holds every stored layer of every image (gigabytes for a small study); the tables,
draws and manifest hold the results (megabytes). A finished run needs only the latter: reports and
``compare`` read tables. So a finished run deletes its store unless the study keeps it (``run.keep_store``),
and ``faceprobe clean`` removes it, or the report too, from any run not in use. A killed run keeps its store
until it finishes; cleaned, it extracts again what it needs, with the same results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from faceprobe.errors import FaceprobeError
from faceprobe.run.lock import hold

__all__ = ["RunStatus", "folder_sizes", "reclaim", "reclaim_held", "run_status"]


@dataclass(frozen=True)
class RunStatus:
    """Which units of a run are finished; ``reclaimed``: bytes of activation store a finished run freed."""

    run_dir: Path
    total: int
    finished: tuple[str, ...]
    pending: tuple[str, ...]
    reclaimed: int = 0

    @property
    def complete(self) -> bool:
        return not self.pending


def run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, or the one-line error that it is a file (checked before anything is loaded:
    a command that is going to fail should say so at once)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FaceprobeError(f"{run_dir} is a file; give a folder for the run")
    return run_dir


def run_status(run_dir: str | Path) -> RunStatus:
    """Which units of a run are finished and which are left."""
    run_dir = Path(run_dir)
    plan = run_dir / "units" / "plan.json"
    if not plan.exists():
        raise FaceprobeError(
            f"{run_dir}: not a faceprobe run folder (no units/plan.json); start it with faceprobe run"
        )
    ids = [u["id"] for u in json.loads(plan.read_text())]
    finished = tuple(i for i in ids if (run_dir / "units" / f"{i}.done").exists())
    return RunStatus(run_dir, len(ids), finished, tuple(i for i in ids if i not in finished))


#: Parts that hold results and are never removed.
_RESULTS = (
    "results.parquet",
    "vip_study.parquet",
    "ablation.parquet",
    "baseline.parquet",
    "draws.parquet",
    "labels.parquet",
    "manifest.json",
    "config.toml",
    "units",
    "log.jsonl",
)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def folder_sizes(run_dir: str | Path, store: str = "store") -> dict[str, int]:
    """Bytes on disk per part: tables (everything that holds results), store, ablated stores, report."""
    run_dir = Path(run_dir)
    root = run_dir / store
    ablated = root / "ablated"
    return {
        "tables": sum(_size(run_dir / name) for name in _RESULTS if (run_dir / name).exists()),
        "store": sum(_size(p) for p in _store_parts(root)),
        "ablated stores": _size(ablated) if ablated.exists() else 0,
        "report": _size(run_dir / "report") if (run_dir / "report").exists() else 0,
    }


def _store_parts(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from (p for p in root.iterdir() if p.name != "ablated")


def reclaim(run_dir: str | Path, store: str = "store", report: bool = False) -> int:
    """Delete the activation store (and the report with ``report``); returns the bytes freed.

    Holds the run folder while it works, so a run in progress is never cleaned
    (:class:`faceprobe.run.lock.RunInUse`); tables, draws and the manifest are never touched.
    """
    run_dir = Path(run_dir)
    with hold(run_dir):
        return _delete(run_dir, store, report)


def reclaim_held(run_dir: Path, store: str) -> int:
    """:func:`reclaim` of the store for a caller that already holds ``run_dir`` (a finishing run)."""
    return _delete(run_dir, store, report=False)


def _delete(run_dir: Path, store: str, report: bool) -> int:
    targets = [run_dir / store] + ([run_dir / "report"] if report else [])
    freed = 0
    for target in targets:
        if target.exists():
            freed += _size(target)
            shutil.rmtree(target)
    return freed
