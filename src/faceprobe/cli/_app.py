"""The ``faceprobe`` command line: thin Typer commands over the library.

Problems the user can fix arrive as one line (``error: ...``) and exit status 2, a full disk included; no
traceback is shown unless FACEPROBE_DEBUG=1 is set.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, NoReturn, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from faceprobe import __version__
from faceprobe.atomic import DISK_FULL, disk_full_error
from faceprobe.errors import FaceprobeError

#: Help is Markdown so that a docstring's hard-wrapped lines join into paragraphs that rewrap to the
#: terminal's width (Rich markup would keep each line break and wrap every line again in a narrow terminal).
HELP_MARKUP: Final = "markdown"

app = typer.Typer(
    name="faceprobe",
    help=(
        "Measure where a face-recognition network encodes facial attributes: in which layers, channels and "
        "single neurons, with PLS + QDA probes and VIP scores (Diniz, 2021).\n\n"
        "Start with **faceprobe demo**: it runs the whole method offline on synthetic faces."
    ),
    rich_markup_mode=HELP_MARKUP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out_console = Console()


def command_group(name: str, help: str) -> typer.Typer:
    """``faceprobe NAME SUBCOMMAND``: a group of commands whose help renders like the others'."""
    group = typer.Typer(name=name, help=help, rich_markup_mode=HELP_MARKUP, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def _version(value: bool) -> None:
    if value:
        out_console.print(f"faceprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """faceprobe: probe face-recognition CNNs for facial attributes."""


def progress_bars() -> Progress | PlainProgress:
    """Live bars with an ETA on a terminal; timestamped lines where stderr is a log file or a pipe.

    A cluster job's log (or ``2> run.log``) cannot redraw a bar, so there progress arrives as plain lines
    as work advances, never all at once at the end.
    """
    if not console.is_terminal:
        return PlainProgress(console)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


class PlainProgress:
    """Progress as log lines, each starting with an ISO timestamp: one when a task starts, one about every
    ``fraction`` of its total or ``seconds`` (whichever comes first, as work advances), and one when it ends.

    It takes the calls of rich's :class:`~rich.progress.Progress` that faceprobe makes (``add_task``,
    ``advance``, ``update``, ``console``), so commands pass either to the same code; several tasks may run
    at once (a run's work units, and per unit its images).
    """

    def __init__(
        self,
        console: Console,
        *,
        fraction: float = 0.1,
        seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self._fraction, self._seconds, self._clock = fraction, seconds, clock
        self._tasks: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def _file(self) -> TextIO:
        return self.console.file

    def _line(self, text: str) -> None:
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")
        self._file.write(f"{stamp} {text}\n")
        self._file.flush()

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0, **_: Any) -> int:
        with self._lock:
            task = len(self._tasks)
            now = self._clock()
            self._tasks[task] = {
                "description": description,
                "total": total,
                "completed": completed,
                "start": now,
                "said_at": now,
                "said_step": 0,
                "done": False,
                "announced": False,
            }
            self._check(task)
        return task

    def advance(self, task: int | TaskID, advance: float = 1) -> None:
        with self._lock:
            self._tasks[int(task)]["completed"] += advance
            self._check(int(task))

    def update(
        self,
        task: int | TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            state = self._tasks[int(task)]
            if total is not None:
                state["total"] = total
            if completed is not None:
                state["completed"] = completed
            if advance is not None:
                state["completed"] += advance
            if description is not None:
                state["description"] = description
            self._check(int(task))

    def _check(self, task: int) -> None:
        """Say how far ``task`` is when it ended, crossed the next step of its total, or went quiet for
        ``seconds``."""
        state = self._tasks[task]
        if state["done"]:
            return
        now, total, completed = self._clock(), state["total"], state["completed"]
        if not state["announced"]:  # a task named later (training's epochs) starts when it has a name
            if not state["description"]:
                return
            state["announced"] = True
            todo = f" ({int(total)} to do)" if total is not None else ""
            self._line(f"{state['description']}: started{todo}")
        elapsed = now - state["start"]
        if total is not None and completed >= total:
            state["done"] = True
            self._line(f"{state['description']}: done, {int(completed)}/{int(total)} in {_duration(elapsed)}")
            return
        fraction = completed / total if total else 0.0
        step = int(fraction / self._fraction + 1e-9)  # how many tenths are done
        if step <= state["said_step"] and now - state["said_at"] < self._seconds:
            return
        state["said_at"], state["said_step"] = now, max(step, state["said_step"])
        if total is None:
            self._line(f"{state['description']}: {int(completed)} done, {_duration(elapsed)} elapsed")
            return
        eta = f", ETA {_duration(elapsed * (1 - fraction) / fraction)}" if fraction > 0 else ""
        self._line(
            f"{state['description']}: {int(completed)}/{int(total)} ({fraction:.0%}), "
            f"{_duration(elapsed)} elapsed{eta}"
        )


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FaceprobeError(f"{flag} takes comma-separated integers, e.g. 256,14,14; got {text!r}") from None
    if any(v < 1 for v in values):
        raise FaceprobeError(f"{flag} values must be positive; got {text!r}")
    return values


#: Finished tasks a live display keeps on screen (besides the first, the run's overall count): a run that
#: reports each work unit as a task of its own would otherwise fill the terminal with finished bars.
_FINISHED_SHOWN = 3


def stepper(progress: Progress | PlainProgress) -> Callable[[str, int | None], Callable[[int], None]]:
    """``step(description, total) -> advance(k)``: the callback the library's long jobs report through.

    Each call is a task of its own, and several may advance at once. On a terminal, finished tasks beyond the
    last few (and the first) are taken off the display.
    """
    finished: list[TaskID] = []

    def step(description: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)

        def advance(k: int) -> None:
            progress.advance(task, k)
            if not isinstance(progress, Progress) or task == 0:
                return
            state = next(t for t in progress.tasks if t.id == task)
            if state.finished and task not in finished:
                finished.append(task)
                while len(finished) > _FINISHED_SHOWN:
                    progress.update(finished.pop(0), visible=False)

        return advance

    return step


#: OS errors about where faceprobe was told to read or write: the user's to fix, with how.
_PLACE_ERRORS = {
    errno.EACCES: "choose a folder you may write to (or fix its permissions)",
    errno.EPERM: "choose a folder you may write to (or fix its permissions)",
    errno.EROFS: "the file system is read-only; choose a folder on a writable one",
    errno.EEXIST: "a file stands where a folder is needed; give another path",
    errno.ENOTDIR: "a file stands where a folder is needed; give another path",
    errno.EISDIR: "a folder stands where a file is needed; give another path",
    errno.ELOOP: "the path loops through symbolic links; fix the links",
}


def _error(err: FaceprobeError) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
    sys.exit(2)


def main() -> None:
    """Console entry point: run the app and turn errors into one line each."""
    try:
        app()
    except FaceprobeError as err:
        _error(err)
    except KeyboardInterrupt:
        console.print("interrupted; finished work is kept, run the same command again to continue")
        sys.exit(130)
    except Exception as err:
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # a write outside faceprobe.atomic
            _error(disk_full_error(err.filename, err))
        if isinstance(err, OSError) and err.errno in _PLACE_ERRORS and err.filename:
            _error(FaceprobeError(f"{err.filename}: {err.strerror}; {_PLACE_ERRORS[err.errno]}"))
        if os.environ.get("FACEPROBE_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/red] {type(err).__name__}: {escape(str(err))} "
            "(a faceprobe bug: please report it; set FACEPROBE_DEBUG=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
