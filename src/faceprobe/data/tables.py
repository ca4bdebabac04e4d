"""Label tables in CSV or TSV: one row per image, an id column and binary columns, checked cell by cell.

pandas parses the file as text; values are then checked in bulk, and only when something is off is the file
scanned again to name the line an editor shows, so large tables load fast and bad ones fail precisely.
"""

from __future__ import annotations

import codecs
import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from faceprobe.data.images import link_problem
from faceprobe.errors import DataError

__all__ = [
    "binary_columns",
    "check_text_file",
    "data_lines",
    "id_column",
    "label_columns",
    "line_of_row",
    "read_table",
    "unique_ids",
]

ID_COLUMNS = ("image_id", "image", "id", "file", "filename", "file_name", "path", "image_path", "name")

# Each column keeps one spelling.
_SCHEMES = ({"-1": 0, "1": 1}, {"0": 0, "1": 1}, {"false": 0, "true": 1})
_SCHEME_NAMES = ("-1/1", "0/1", "true/false")


def data_lines(path: Path, header_lines: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of each non-blank line after the header (1-based)."""
    with open(path, encoding="utf-8", errors="replace") as f:
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


_SEPARATOR_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def check_text_file(path: Path, what: str = "a CSV or TSV text file") -> None:
    """Refuse a file that is not UTF-8 text by its first bytes: UTF-16/32, compressed, a workbook, binary.

    Each gets a line that says what the file is and what to do; ``what`` names the file that was expected.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    found = None
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        found = "is UTF-32 encoded; save it as UTF-8"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        found = "is UTF-16 encoded; save it as UTF-8"
    elif head.startswith(b"\x1f\x8b"):
        found = "is gzip-compressed; decompress it (gunzip) and give the text file"
    elif head.startswith(b"PK\x03\x04"):
        found = "is a ZIP archive (an Excel .xlsx workbook?), not text; export it as CSV (UTF-8)"
    elif head.startswith(b"\xd0\xcf\x11\xe0"):
        found = "is an Excel .xls workbook, not text; export it as CSV (UTF-8)"
    elif b"\x00" in head:
        # ASCII text in UTF-16 without a byte-order mark: every other byte is NUL
        even, odd = head[0::2].count(0), head[1::2].count(0)
        utf16 = max(even, odd) > len(head) // 4 and min(even, odd) == 0
        found = (
            "is UTF-16 encoded; save it as UTF-8"
            if utf16
            else f"holds binary data (NUL bytes), not text; give {what}"
        )
    if found is not None:
        raise DataError(f"{path}: {found}")


def _not_utf8(path: Path) -> DataError:
    """The error for a file pandas could not decode as UTF-8, naming the line of the first bad byte."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, byte = data.count(b"\n", 0, error.start) + 1, data[error.start]
        return DataError(
            f"{path}:{line}: is not UTF-8 (byte 0x{byte:02x}; it looks Latin-1 or Windows-1252 encoded); "
            "save it as UTF-8"
        )
    return DataError(f"{path}: cannot be decoded as UTF-8 text; save it as UTF-8")


def _header_line(path: Path) -> str:
    """The first non-blank line (pandas skips blank lines before the header), without a byte-order mark."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return next((line for line in f if line.strip()), "")


def _separator(path: Path, header: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    if path.suffix.lower() == ".csv":
        return ","
    return "\t" if "\t" in header else ","


def _check_separator(path: Path, sep: str, header: str) -> None:
    """A header without the expected separator but with another: say which it looks like, and the fix."""
    if sep in header:
        return
    counts = {other: header.count(other) for other in _SEPARATOR_NAMES if other != sep}
    other = max(counts, key=lambda s: counts[s])
    if counts[other] == 0:
        return  # one column: later checks say what is missing
    suffix = path.suffix.lower() or "(no suffix)"
    name = _SEPARATOR_NAMES[other]
    if other == "\t":
        fix = "rename it .tsv, or save it comma-separated"
    elif other == "," and sep == "\t":
        fix = "rename it .csv, or save it tab-separated"
    else:
        fix = "save it comma-separated (CSV) or tab-separated (TSV)"
    expected = f"{_SEPARATOR_NAMES[sep]}-separated"
    raise DataError(f"{path}:1: looks {name}-separated, but a {suffix} file is read as {expected}; {fix}")


def _check_header(path: Path, sep: str, header: str) -> list[str]:
    """The column names of the raw header line, each named and named once (pandas would rename a
    duplicate ``X`` to ``X.1``)."""
    names = [name.strip() for name in next(csv.reader([header], delimiter=sep, skipinitialspace=True), [])]
    for k, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}:1: column {k} has no name in the header line; name it or remove it")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(
                f"{path}:1: column {name!r} appears twice in the header line; rename or remove one"
            )
        seen.add(name)
    return names


def read_table(path: Path) -> pd.DataFrame:
    """Every cell of the CSV/TSV file at ``path`` as stripped text, columns named by its header line."""
    if not path.is_file():
        raise DataError(
            link_problem(path) or f"{path} not found; give the CSV or TSV file that labels the images"
        )
    check_text_file(path)
    header = _header_line(path)
    if not header.strip():
        raise DataError(f"{path}: the file is empty; it needs a header line and one row per image")
    sep = _separator(path, header)
    _check_separator(path, sep, header)
    names = _check_header(path, sep, header)
    try:
        frame = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8"
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header line and one row per image") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except ValueError:  # pandas' ParserError
        _check_widths(path, sep)
        raise DataError(f"{path}: cannot be parsed as a table; check that it is CSV or TSV") from None
    # pandas fills short rows with "" and turns a first row with extra fields into an index: find the row.
    if not isinstance(frame.index, pd.RangeIndex) or (frame == "").any().any():
        _check_widths(path, sep)
    if len(names) != len(frame.columns):  # pandas split the header otherwise (quotes across lines, ...)
        raise DataError(f"{path}:1: cannot read the header line; fix it (one name per column)")
    frame.columns = names
    if frame.empty:
        raise DataError(f"{path}: has a header but no rows; add one row per image below it")
    return frame.apply(lambda column: column.str.strip())


def _check_widths(path: Path, sep: str) -> None:
    """Raise at the first row whose number of fields differs from the header's."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
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


def label_columns(path: Path, frame: pd.DataFrame, header_lines: int = 1) -> pd.DataFrame:
    """``frame``'s text cells as targets of their kinds (:mod:`faceprobe.targets`): binary columns as 0/1
    ``int8`` (checked as :func:`binary_columns` does), multi-class ones categorical, continuous ones float."""
    from faceprobe.targets import infer_column

    inferred = {name: infer_column(path, name, frame[name], header_lines) for name in frame.columns}
    binary = binary_columns(
        path, frame[[n for n, column in inferred.items() if column is None]], header_lines
    )
    return pd.DataFrame(
        {name: binary[name] if column is None else column for name, column in inferred.items()},
        index=frame.index,
    )
