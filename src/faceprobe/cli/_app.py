"""The ``faceprobe`` command line: thin Typer commands over the library.

Problems the user can fix arrive as one line (``error: ...``) and exit status 2, a full disk included; no
traceback is shown unless FACEPROBE_DEBUG=1 is set.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from faceprobe import __version__
from faceprobe.atomic import DISK_FULL, disk_full_error
from faceprobe.errors import FaceprobeError

app = typer.Typer(
    name="faceprobe",
    help=(
        "Measure where a face-recognition network encodes facial attributes: in which layers, channels and "
        "single neurons, with PLS + QDA probes and VIP scores (Diniz, 2021).\n\n"
        "Start with [bold]faceprobe demo[/bold]: it runs the whole method offline on synthetic faces."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out_console = Console()


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


def progress_bars() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise FaceprobeError(f"{flag} takes comma-separated integers, e.g. 256,14,14; got {text!r}") from None
    if any(v < 1 for v in values):
        raise FaceprobeError(f"{flag} values must be positive; got {text!r}")
    return values


def stepper(progress: Progress) -> Callable[[str, int | None], Callable[[int], None]]:
    def step(description: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return lambda k: progress.advance(task, k)

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
