"""Label tables in CSV or TSV: one row per image, an id column and binary columns, checked cell by cell.

pandas parses the file as text; values are then checked in bulk, and only when something is off is the file
scanned again to name the line an editor shows, so large tables load fast and bad ones fail precisely.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.errors import DataError

__all__ = ["binary_columns", "data_lines", "id_column", "line_of_row", "read_table", "unique_ids"]

ID_COLUMNS = ("image_id", "image", "id", "file", "filename", "file_name", "path", "image_path", "name")

# Each column keeps one spelling.
_SCHEMES = ({"-1": 0, "1": 1}, {"0": 0, "1": 1}, {"false": 0, "true": 1})
_SCHEME_NAMES = ("-1/1", "0/1", "true/false")


def data_lines(path: Path, header_lines: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of each non-blank line after the header (1-based)."""
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if number > header_lines and line.strip():
                yield number, line.split()


def line_of_row(path: Path, header_lines: int, row: int) -> int | str:
    """The line number of data row ``row`` (0-based; blank lines are not rows, as in pandas).

    Where pandas splits lines differently (a lone carriage return or other control characters), the row
    may have no line here; then it is named as "data row N".
    """
    found = next(itertools.islice(data_lines(path, header_lines), row, None), None)
    return f"data row {row + 1}" if found is None else found[0]


def _separator(path: Path) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    with open(path, errors="replace") as f:
        header = f.readline()
    return "\t" if "\t" in header else ","


def read_table(path: Path) -> pd.DataFrame:
    """Every cell of the CSV/TSV file at ``path`` as stripped text, columns named by its header line."""
    if not path.is_file():
        raise DataError(f"{path} not found; give the CSV or TSV file that labels the images")
    sep = _separator(path)
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header line and one row per image") from None
    except (ValueError, UnicodeDecodeError):  # pandas' ParserError, or undecodable bytes
        _check_widths(path, sep)
        raise DataError(f"{path}: cannot be parsed as a table; check that it is CSV or TSV") from None
    # pandas fills short rows with "" and turns a first row with extra fields into an index: find the row.
    if not isinstance(frame.index, pd.RangeIndex) or (frame == "").any().any():
        _check_widths(path, sep)
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns) or any(c.startswith("Unnamed: ") for c in frame.columns):
        raise DataError(f"{path}:1: every column needs its own name in the header line; fix the header")
    return frame.apply(lambda column: column.str.strip())


def _check_widths(path: Path, sep: str) -> None:
    """Raise at the first row whose number of fields differs from the header's."""
    with open(path, newline="", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        width = len(next(reader, []))
        for row in reader:
            if row and len(row) != width:
                raise DataError(
                    f"{path}:{reader.line_num}: expected {width} fields like the header, found {len(row)}; "
                    "fix or remove the line"
                )


def id_column(frame: pd.DataFrame) -> str:
    """The id column: the first with a usual id name (``image_id``, ``file``, ...), else the first column."""
    lower = {c.lower(): c for c in frame.columns}
    return next((lower[name] for name in ID_COLUMNS if name in lower), frame.columns[0])


def unique_ids(path: Path, frame: pd.DataFrame, column: str) -> pd.Index:
    """The image ids in ``column``, checked to be filled in and listed once each."""
    if column not in frame.columns:
        raise DataError(f"{path}:1: no column {column!r}; the header has {', '.join(frame.columns)}")
    ids = pd.Index(frame[column], name="image")
    if (ids == "").any():
        row = int(np.argmax(ids == ""))
        raise DataError(
            f"{path}:{line_of_row(path, 1, row)}: the image id is empty; fill it in or remove the row"
        )
    if not ids.is_unique:
        row = int(np.argmax(ids.duplicated()))
        raise DataError(
            f"{path}:{line_of_row(path, 1, row)}: image {ids[row]} is listed twice; keep one line per image"
        )
    return ids


def binary_columns(path: Path, frame: pd.DataFrame, header_lines: int = 1) -> pd.DataFrame:
    """``frame``'s text cells as 0/1 ``int8``; each column spells them one way: -1/1, 0/1 or true/false."""
    out = {}
    for name in frame.columns:
        values = frame[name].str.lower()
        distinct = set(values.unique())
        scheme = next((s for s in _SCHEMES if distinct <= s.keys()), None)
        if scheme is None:
            known = values.isin([token for s in _SCHEMES for token in s])
            if not known.all():
                row, why = int(np.argmax(~known.to_numpy())), "must be -1/1, 0/1 or true/false"
            else:  # valid tokens, mixed spellings: blame the first row that breaks the first decisive one
                decisive = values[values != "1"].iloc[0]
                spelling = next(i for i, s in enumerate(_SCHEMES) if decisive in s)
                row = int(np.argmax(~values.isin(list(_SCHEMES[spelling])).to_numpy()))
                why = f"earlier rows spell it {_SCHEME_NAMES[spelling]}; use one spelling per column"
            line = line_of_row(path, header_lines, row)
            raise DataError(f"{path}:{line}: {name} is {frame[name].iloc[row]!r}, but {why}; fix the value")
        out[name] = values.map(scheme).to_numpy(dtype=np.int8)
    return pd.DataFrame(out, index=frame.index)
