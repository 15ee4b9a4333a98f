"""Reading one table file of a dataset (CSV or Parquet) into its raw columns.

:func:`read_table` returns a :class:`Table`: the known columns as read (CSV: text; Parquet: Arrow
arrays) and a locator that turns a 0-based record index into the row a user sees in the file
(:func:`csv_line_of`; see :mod:`pinsage.data.dataset` for how rows are numbered). A file that cannot
be read is refused with a :class:`~pinsage.data.errors.DatasetError` and a hint at the likely cause
(not UTF-8, a semicolon-separated header, an unclosed quote, a truncated Parquet file).
:mod:`pinsage.data.columns` then checks the columns.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage.data.errors import DatasetError


class Table:
    """Raw columns of one file plus what is needed to turn a 0-based index into a user row."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.is_csv = path.suffix == ".csv"
        self.columns: dict[str, object] = {}  # CSV: pd.Series[str]; Parquet: pa.ChunkedArray
        self.n_rows = 0

    def user_row(self, idx: int) -> int:
        """0-based data index -> the row number a user sees (see :mod:`pinsage.data.dataset`)."""
        idx = int(idx)
        if not self.is_csv:
            return idx + 1
        return csv_line_of(self.path, idx)

    def error(self, message: str, column: str | None = None, idx: int | None = None):
        return DatasetError(message, file=self.name, column=column,
                            row=None if idx is None else self.user_row(idx))


def csv_line_of(path: Path, idx: int) -> int:
    """Line number (1-based, header = 1) where data record ``idx`` starts (error path only).

    Blank lines are skipped by the CSV reader and do not count as records. Without any quote
    character in the file every record is one line, found with numpy over the newline positions;
    otherwise the file is walked with the csv module so quoted fields spanning lines count right.
    """
    try:
        data = path.read_bytes()
        if b'"' not in data:
            buf = np.frombuffer(data, dtype=np.uint8)
            ends = np.flatnonzero(buf == 10)
            starts = np.concatenate(([0], ends + 1))
            stops = np.concatenate((ends, [len(buf)]))
            length = stops - starts
            # a line holding only "\r" is blank too
            cr = (length == 1) & (buf[np.minimum(starts, len(buf) - 1)] == 13)
            nonblank = np.flatnonzero((length > 0) & ~cr) + 1  # 1-based line numbers
            if idx + 1 < len(nonblank):
                return int(nonblank[idx + 1])
        old = csv.field_size_limit()
        csv.field_size_limit(2**31 - 1)
        try:
            with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
                reader = csv.reader(fh)
                prev_end, k, header = 0, -1, False
                for rec in reader:
                    start, prev_end = prev_end + 1, reader.line_num
                    if not rec:
                        continue
                    if not header:
                        header = True
                        continue
                    k += 1
                    if k == idx:
                        return start
        finally:
            csv.field_size_limit(old)
    except (csv.Error, OSError, ValueError, IndexError):
        pass
    return idx + 2


def _decode_error(path: Path) -> DatasetError:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        shift = 3
    else:
        shift = 0
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start:exc.start + 1]
        hint = ""
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (the file looks like UTF-16; save it as UTF-8)"
        return DatasetError(f"cannot decode byte 0x{bad.hex()} at offset {exc.start + shift}: "
                            f"expected UTF-8 text{hint}", file=path.name, row=line)
    return DatasetError("cannot decode the file: expected UTF-8 text", file=path.name)


def _read_csv(path: Path, required: tuple[str, ...], known: tuple[str, ...]) -> Table:
    t = Table(path)
    opts = dict(dtype=str, encoding="utf-8-sig", na_filter=False)
    try:
        header = pd.read_csv(path, nrows=0, **opts).columns
        present = {str(c).strip(): c for c in header}
        missing = [c for c in required if c not in present]
        if missing:
            raise DatasetError(f"required column missing; found columns {list(map(str, header))}"
                               f"{_delimiter_hint(header)}; expected a header naming "
                               f"{', '.join(required)}", file=t.name, column=missing[0])
        # every column is read (no usecols): with usecols pandas silently drops the extra fields
        # of a ragged row, e.g. a title with an unquoted comma spilling into the next column
        df = pd.read_csv(path, **opts)
    except UnicodeDecodeError:
        raise _decode_error(path) from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"file is empty; expected a header line naming at least "
                           f"{', '.join(required)} and one data row", file=t.name) from None
    except pd.errors.ParserError as exc:
        text = str(exc).strip()
        unclosed = re.search(r"EOF inside string starting at row (\d+)", text)
        if unclosed:  # pandas counts records from 0 = the header line
            raise DatasetError("a quoted field is never closed: the file ends inside it (truncated, "
                               "or a stray '\"'); expected every opening '\"' to be closed",
                               file=t.name, row=csv_line_of(path, int(unclosed.group(1)) - 1)) from None
        found = re.search(r"line (\d+)", text)  # pandas counts file lines, header = 1
        raise DatasetError(f"cannot parse as CSV: {text}; expected every row to have the header's "
                           "number of fields (quote fields that contain commas)", file=t.name,
                           row=int(found.group(1)) if found else None) from None
    df.columns = [str(c).strip() for c in df.columns]
    df = df.loc[:, ~df.columns.duplicated()]  # "item_id" and " item_id": the first one wins
    t.columns = {c: df[c] for c in known if c in df.columns}
    t.n_rows = len(df)
    return t


def _delimiter_hint(header) -> str:
    """A hint when the header line is one column holding another separator (Excel in some locales)."""
    names = [str(c) for c in header]
    if len(names) == 1:
        for sep, what in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in names[0]:
                return (f"; the header looks {what}-separated, but the file must be comma-separated "
                        "(save as 'CSV UTF-8 (comma delimited)')")
    return ""


def _read_parquet(path: Path, required: tuple[str, ...], known: tuple[str, ...]) -> Table:
    t = Table(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read as Parquet: {exc}; expected a complete Parquet file (a truncated "
                           "copy, or a CSV named .parquet?)", file=t.name) from None
    names = list(schema.names)
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"required column missing; found columns {names}; expected columns "
                           f"{', '.join(required)}", file=t.name, column=missing[0])
    wanted = [c for c in known if c in names]
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read as Parquet: {exc}; expected a complete Parquet file",
                           file=t.name) from None
    t.columns = {c: table.column(c) for c in wanted}
    t.n_rows = table.num_rows
    return t


def read_table(path: Path, required: tuple[str, ...], known: tuple[str, ...], *,
               allow_empty: bool = False) -> Table:
    """The ``known`` columns of a CSV or Parquet file; refuses one that lacks a ``required`` column
    and, unless ``allow_empty``, one without data rows."""
    t = _read_csv(path, required, known) if path.suffix == ".csv" else _read_parquet(path, required, known)
    if t.n_rows == 0 and not allow_empty:
        raise DatasetError("no data rows (the table is empty or holds only a header); expected at least "
                           "one data row", file=t.name)
    return t
