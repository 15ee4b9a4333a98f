"""The dataset contract: loading and validation.

A dataset is a directory holding two tables and an optional third, each as CSV or Parquet (Parquet
wins when both exist):

``items.parquet`` / ``items.csv``
    ``item_id`` (required, unique); optional ``title``, ``text`` (free annotations) and
    ``image_path`` (relative to the dataset directory).
``interactions.parquet`` / ``interactions.csv``
    ``context_id`` and ``item_id`` (required); optional ``weight`` (> 0, default 1.0) and
    ``timestamp`` (integer unix seconds).
``tags.parquet`` / ``tags.csv`` (optional)
    user-written annotations: ``context_id`` (who wrote it), ``item_id`` (an item of the items
    table), ``tag`` (non-empty text), all required; optional ``timestamp`` (integer unix seconds,
    when it was written). Kept apart from ``items.text`` because they are users' actions: an item's
    text gets only the tags the training split could have seen (:mod:`pinsage.data.tags`).

Other columns are ignored. Ids are always strings in the library: CSV id columns are read as text,
Parquet integer ids become their decimal string, and surrounding whitespace is stripped.

Every refusal is a :class:`DatasetError` naming the file, the column and the row at fault.
Row numbers are what a user sees in the file: for CSV the 1-based *line number* of the record
(the header is line 1, so the first data row is line 2); for Parquet the 1-based data row number.
All checks are vectorised; only the reported row is located one at a time.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ITEMS = "items"
INTERACTIONS = "interactions"
TAGS = "tags"
ITEM_COLUMNS = ("item_id", "title", "text", "image_path")
INTERACTION_COLUMNS = ("context_id", "item_id", "weight", "timestamp")
TAG_COLUMNS = ("context_id", "item_id", "tag", "timestamp")
REQUIRED = {ITEMS: ("item_id",), INTERACTIONS: ("context_id", "item_id"), TAGS: ("context_id", "item_id", "tag")}
KNOWN = {ITEMS: ITEM_COLUMNS, INTERACTIONS: INTERACTION_COLUMNS, TAGS: TAG_COLUMNS}
MAX_SECONDS = 10**11  # unix seconds beyond this (year 5138) are almost surely milliseconds
MAX_ID_CHARS = 1_000  # an id longer than this is a column mix-up (or an unclosed quote), not an id
MAX_TEXT_CHARS = 1_000_000  # a title/text/image_path field longer than this: an unclosed quote, a dump
MIN_ITEMS = 2  # "related items" needs at least one other item


class DatasetError(ValueError):
    """A dataset that does not follow the contract.

    Attributes:
        message: what is wrong, without the location prefix.
        file: the file name (e.g. ``"interactions.csv"``), or the directory for directory-level
            problems; None when not tied to a file.
        column: the column at fault, or None.
        row: the row as a user sees it in the file, or None. CSV: the 1-based line number of the
            record (header = line 1, first data row = line 2). Parquet: the 1-based data row.

    ``str(err)`` reads e.g.
    ``interactions.csv, column 'weight', row 17: expected a positive number, got '-3'``.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 row: int | None = None):
        self.message = message
        self.file = file
        self.column = column
        self.row = row
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        if self.row is not None:
            parts.append(f"row {self.row}")
        return f"{', '.join(parts)}: {self.message}" if parts else self.message

    def __str__(self) -> str:
        return self._format()

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing, Airflow)
        return (_rebuild_error, (type(self), self.message, self.file, self.column, self.row))


def _rebuild_error(cls, message, file, column, row):
    return cls(message, file=file, column=column, row=row)


@dataclass
class Dataset:
    """A validated dataset.

    ``items``: item_id (str), title (str, "" if absent), text (str, "" if absent), image_path
    (str relative to ``root``, "" if absent); one row per item in file order, so the row position
    is the item's dense index.
    ``interactions``: context_id (str), item_id (str), weight (float64, 1.0 if absent),
    timestamp (int64, only when the file has the column), row (int64, 0-based position of the
    record in the file, kept across ``max_timestamp`` filtering).
    ``tags``: None without a tags file; else context_id (str), item_id (str), tag (str, stripped),
    timestamp (int64, only when the file has the column), row (int64, as for interactions); an
    empty frame for a file holding only a header.
    """

    root: Path
    items: pd.DataFrame
    interactions: pd.DataFrame
    has_timestamps: bool
    items_file: Path
    interactions_file: Path
    tags: pd.DataFrame | None = None
    tags_file: Path | None = None

    def item_index(self) -> pd.Index:
        """``item_id`` -> dense index (the position in ``items``): ``idx.get_indexer(ids)``."""
        return pd.Index(self.items["item_id"], name="item_id")

    @property
    def n_items(self) -> int:
        return len(self.items)


# --------------------------------------------------------------------------------------------
# locating the files

def find_table(root: Path, name: str) -> Path:
    """``root/name.parquet`` if it exists, else ``root/name.csv``; DatasetError if neither."""
    for ext in (".parquet", ".csv"):
        p = root / f"{name}{ext}"
        if p.is_file():
            return p
    raise DatasetError(f"missing {name} table: looked for {name}.parquet and {name}.csv "
                       f"in {root}; expected one of them (see the dataset contract)", file=str(root))


def find_optional_table(root: Path, name: str) -> Path | None:
    """``root/name.parquet`` if it exists, else ``root/name.csv``, else None."""
    for ext in (".parquet", ".csv"):
        p = root / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def _check_root(path) -> Path:
    root = Path(path)
    if not root.exists():
        raise DatasetError(f"dataset directory does not exist: {root}; expected a directory holding "
                           "items.{csv,parquet} and interactions.{csv,parquet}", file=str(root))
    if not root.is_dir():
        raise DatasetError(f"not a directory: {root} (expected a dataset directory holding "
                           "items.{csv,parquet} and interactions.{csv,parquet})", file=str(root))
    return root


# --------------------------------------------------------------------------------------------
# reading a table into {column: raw values} with a row-locator for error messages

class _Table:
    """Raw columns of one file plus what is needed to turn a 0-based index into a user row."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.name = path.name
        self.kind = kind
        self.is_csv = path.suffix == ".csv"
        self.columns: dict[str, object] = {}  # CSV: pd.Series[str]; Parquet: pa.ChunkedArray
        self.n_rows = 0

    def user_row(self, idx: int) -> int:
        """0-based data index -> the row number a user sees (see module docstring)."""
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


def _read_csv(path: Path, kind: str) -> _Table:
    t = _Table(path, kind)
    known = KNOWN[kind]
    opts = dict(dtype=str, encoding="utf-8-sig", na_filter=False)
    try:
        header = pd.read_csv(path, nrows=0, **opts).columns
        present = {str(c).strip(): c for c in header}
        missing = [c for c in REQUIRED[kind] if c not in present]
        if missing:
            raise DatasetError(f"required column missing; found columns {list(map(str, header))}"
                               f"{_delimiter_hint(header)}; expected a header naming "
                               f"{', '.join(REQUIRED[kind])}", file=t.name, column=missing[0])
        # every column is read (no usecols): with usecols pandas silently drops the extra fields
        # of a ragged row, e.g. a title with an unquoted comma spilling into the next column
        df = pd.read_csv(path, **opts)
    except UnicodeDecodeError:
        raise _decode_error(path) from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"file is empty; expected a header line naming at least "
                           f"{', '.join(REQUIRED[kind])} and one data row", file=t.name) from None
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


def _read_parquet(path: Path, kind: str) -> _Table:
    t = _Table(path, kind)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read as Parquet: {exc}; expected a complete Parquet file (a truncated "
                           "copy, or a CSV named .parquet?)", file=t.name) from None
    names = list(schema.names)
    missing = [c for c in REQUIRED[kind] if c not in names]
    if missing:
        raise DatasetError(f"required column missing; found columns {names}; expected columns "
                           f"{', '.join(REQUIRED[kind])}", file=t.name, column=missing[0])
    wanted = [c for c in KNOWN[kind] if c in names]
    try:
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"cannot read as Parquet: {exc}; expected a complete Parquet file",
                           file=t.name) from None
    t.columns = {c: table.column(c) for c in wanted}
    t.n_rows = table.num_rows
    return t


def _read(path: Path, kind: str) -> _Table:
    t = _read_csv(path, kind) if path.suffix == ".csv" else _read_parquet(path, kind)
    if t.n_rows == 0:
        raise DatasetError("no data rows (the table is empty or holds only a header); expected at least "
                           "one data row", file=t.name)
    return t


# --------------------------------------------------------------------------------------------
# column normalisation (vectorised; the first offending row is reported)

def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _show(value, limit: int = 60) -> str:
    s = str(value)
    if len(s) > limit:
        s = s[:limit] + "..."
    return repr(s)


def _is_string_type(ty: pa.DataType) -> bool:
    return (pa.types.is_string(ty) or pa.types.is_large_string(ty)
            or getattr(pa.types, "is_string_view", lambda _: False)(ty))


def _arrow_strings(t: _Table, col: str, arr: pa.ChunkedArray, allow_int: bool) -> pa.ChunkedArray:
    """Arrow column -> string column, or a wrong-type DatasetError."""
    ty = arr.type
    if pa.types.is_dictionary(ty):
        arr = arr.cast(ty.value_type)
        ty = arr.type
    if _is_string_type(ty) or pa.types.is_null(ty):
        return arr.cast(pa.string())
    if allow_int and pa.types.is_integer(ty):
        return arr.cast(pa.string())
    expected = "string or integer" if allow_int else "string"
    raise DatasetError(f"wrong Parquet type {ty}; expected {expected}", file=t.name, column=col)


def _ids(t: _Table, col: str) -> pd.Series:
    """Required id column -> stripped str Series; refuses null or empty ids."""
    raw = t.columns[col]
    if isinstance(raw, pd.Series):
        s = raw.str.strip()
        null = _first(s.isna().to_numpy())
        if null is not None:  # a short record: the field is absent altogether
            raise t.error(f"{col} is missing; expected a non-empty id", col, null)
    else:
        arr = _arrow_strings(t, col, raw, allow_int=True)
        null = _first(arr.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error(f"{col} is missing (null); expected a non-empty id", col, null)
        s = pd.Series(arr.to_pandas(), dtype=str).str.strip()
    empty = _first((s == "").to_numpy())
    if empty is not None:
        raise t.error(f"{col} is empty{_truncated_hint(t, empty)}; expected a non-empty id", col, empty)
    too_long = _first((s.str.len() > MAX_ID_CHARS).to_numpy())
    if too_long is not None:
        raise t.error(f"{col} of {len(s.iloc[too_long]):,} characters ({_show(s.iloc[too_long])}); "
                      f"expected an id of at most {MAX_ID_CHARS:,} characters (a shifted column or an "
                      "unclosed quote?)", col, too_long)
    return s.reset_index(drop=True)


def _truncated_hint(t: _Table, idx: int) -> str:
    """For the last CSV record of a file that does not end with a line break: it was cut short."""
    if not t.is_csv or idx != t.n_rows - 1:
        return ""
    try:
        with open(t.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
    except OSError:
        return ""
    if last not in (b"\n", b"\r"):
        return " (the last record has fewer fields than the header and no line break: truncated file?)"
    return ""


def _texts(t: _Table, col: str) -> pd.Series:
    """Optional text column -> str Series with "" for absent values."""
    if col not in t.columns:
        return pd.Series([""] * t.n_rows, dtype=str)
    raw = t.columns[col]
    if isinstance(raw, pd.Series):
        s = raw.fillna("").reset_index(drop=True)
    else:
        arr = _arrow_strings(t, col, raw, allow_int=False)
        s = pd.Series(arr.to_pandas(), dtype=str).fillna("").reset_index(drop=True)
    huge = _first((s.str.len() > MAX_TEXT_CHARS).to_numpy())
    if huge is not None:
        raise t.error(f"field of {len(s.iloc[huge]):,} characters; expected at most {MAX_TEXT_CHARS:,} "
                      "(an unclosed quote that swallowed the following rows, or data in the wrong column?)",
                      col, huge)
    return s


def _numbers(t: _Table, col: str, integer_ok: bool = True) -> tuple[np.ndarray, pd.Series | None]:
    """Numeric column -> (float64 values, NaN where unparsable; raw CSV text for messages)."""
    raw = t.columns[col]
    if isinstance(raw, pd.Series):
        try:  # fast path: Arrow's C++ parser; anything odd falls back to pandas' lenient one
            values = pc.cast(pa.array(raw.array), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowException, TypeError, ValueError):
            values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan)
        return values, raw.reset_index(drop=True)
    ty = raw.type
    if not (pa.types.is_floating(ty) or (integer_ok and pa.types.is_integer(ty))):
        raise DatasetError(f"wrong Parquet type {ty}; expected a number", file=t.name, column=col)
    values = raw.cast(pa.float64()).to_numpy(zero_copy_only=False)
    values = np.where(raw.is_null().to_numpy(zero_copy_only=False), np.nan, values)
    return values, None


def _weights(t: _Table) -> np.ndarray:
    if "weight" not in t.columns:
        return np.ones(t.n_rows, dtype=np.float64)
    values, raw = _numbers(t, "weight")
    with np.errstate(invalid="ignore"):
        bad = _first(~(np.isfinite(values) & (values > 0)))
    if bad is not None:
        got = raw.iloc[bad] if raw is not None else values[bad]  # Parquet null -> nan
        raise t.error(f"expected a positive number, got {_show(got)}", "weight", bad)
    return values


def _timestamps(t: _Table) -> np.ndarray:
    """Timestamp column -> int64 unix seconds; refuses non-integers, negatives, milliseconds.

    Parquet may hold integers, integral floats or a timestamp type (converted to whole seconds).
    """
    raw_col = t.columns["timestamp"]
    raw = None
    if isinstance(raw_col, pd.Series) or pa.types.is_floating(raw_col.type):
        values, raw = _numbers(t, "timestamp", integer_ok=False)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(values)
            not_int = ~finite | (values != np.floor(values))
    else:
        col = raw_col
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("s", tz=col.type.tz), safe=False)
        elif not pa.types.is_integer(col.type):
            raise DatasetError(f"wrong Parquet type {col.type}; expected integer unix seconds",
                               file=t.name, column="timestamp")
        col = col.cast(pa.int64(), safe=False)
        null = _first(col.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error("timestamp is missing (null); expected integer unix seconds", "timestamp", null)
        values = col.to_numpy()
        finite = np.ones(len(values), dtype=bool)
        not_int = ~finite
    with np.errstate(invalid="ignore"):
        negative = finite & (values < 0)
        too_big = finite & (values > MAX_SECONDS)
    i = _first(not_int | negative | too_big)
    if i is not None:
        got = raw.iloc[i] if raw is not None else (None if np.isnan(values[i]) else values[i])
        if too_big[i] and not not_int[i]:
            msg = f"timestamp {_show(got)} looks like milliseconds; expected unix seconds"
        else:
            msg = f"expected integer unix seconds >= 0, got {_show(got)}{_date_hint(got)}"
        raise t.error(msg, "timestamp", i)
    return values.astype(np.int64)


def _date_hint(value) -> str:
    if not isinstance(value, str) or not re.match(r"\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4})", value):
        return ""
    try:
        ts = pd.Timestamp(value.strip())
    except (ValueError, TypeError, OverflowError):
        return ""
    if pd.isna(ts):
        return ""
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return f" (a date/time string: write it as unix seconds, e.g. {int(ts.timestamp())} for {ts.isoformat()})"


def _image_paths(t: _Table, paths: pd.Series) -> pd.Series:
    """Refuse image paths that are absolute or climb out of the dataset directory (lexically).

    Symlinks that lead outside are refused where the images are read (:mod:`pinsage.features.images`); a path
    to a missing or non-image file is not refused: that item gets no visual vector (``has_image`` 0).
    """
    given = paths != ""
    if not given.any():
        return paths
    s = paths.str.replace("\\", "/", regex=False)
    absolute = s.str.startswith("/") | s.str.match(r"^[A-Za-z]:") | s.str.contains("\x00", regex=False)
    norm = s.map(lambda p: os.path.normpath(p).replace("\\", "/") if p else p)
    escapes = norm.str.startswith("../") | (norm == "..")
    bad = _first((given & (absolute | escapes)).to_numpy())
    if bad is not None:
        why = "is absolute" if absolute.iloc[bad] else "escapes the dataset directory"
        raise t.error(f"image_path {_show(paths.iloc[bad])} {why}; expected a path relative to the "
                      "dataset directory that stays inside it", "image_path", bad)
    return paths


def _unknown_hint(value: str, known: pd.Series) -> str:
    """'2.0' when the items say '2', '7' when they say '007': ids are text."""
    num = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if pd.isna(num):
        return ""
    nums = pd.to_numeric(known, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    hit = np.flatnonzero(nums == float(num))
    if len(hit):
        return (f" (ids are compared as text: the items table has {_show(known.iloc[int(hit[0])])}; write "
                "the same id the same way in both files)")
    return ""


# --------------------------------------------------------------------------------------------
# public API

def _load_items(path: Path) -> pd.DataFrame:
    t = _read(path, ITEMS)
    ids = _ids(t, "item_id")
    dup = ids.duplicated(keep="first").to_numpy()
    second = _first(dup)
    if second is not None:
        first = int(np.flatnonzero((ids == ids.iloc[second]).to_numpy())[0])
        raise t.error(f"duplicate item_id {_show(ids.iloc[second])}, already at row "
                      f"{t.user_row(first)}; expected every item_id once", "item_id", second)
    if t.n_rows < MIN_ITEMS:
        raise t.error(f"the catalogue has {t.n_rows} item; expected at least {MIN_ITEMS} items (related "
                      "items need another item to relate to)")
    return pd.DataFrame({"item_id": ids, "title": _texts(t, "title"),
                         "text": _texts(t, "text"),
                         "image_path": _image_paths(t, _texts(t, "image_path").str.strip())})


def _known_items(t: _Table, item: pd.Series, items: pd.DataFrame) -> None:
    unknown = _first(~item.isin(items["item_id"]).to_numpy())
    if unknown is not None:
        raise t.error(f"unknown item {_show(item.iloc[unknown])}: not in the items table; expected an "
                      f"item_id of the items table{_unknown_hint(item.iloc[unknown], items['item_id'])}",
                      "item_id", unknown)


def _load_interactions(path: Path, items: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    t = _read(path, INTERACTIONS)
    context = _ids(t, "context_id")
    item = _ids(t, "item_id")
    _known_items(t, item, items)
    df = pd.DataFrame({"context_id": context, "item_id": item, "weight": _weights(t)})
    has_ts = "timestamp" in t.columns
    if has_ts:
        df["timestamp"] = _timestamps(t)
    df["row"] = np.arange(len(df), dtype=np.int64)
    return df, has_ts


def _tag_texts(t: _Table) -> pd.Series:
    """The required ``tag`` column -> stripped str Series; refuses null, empty or huge tags."""
    raw = t.columns["tag"]
    if isinstance(raw, pd.Series):
        s = raw.str.strip()
        null = _first(s.isna().to_numpy())
        if null is not None:  # a short record: the field is absent altogether
            raise t.error(f"tag is missing{_truncated_hint(t, null)}; expected a non-empty tag", "tag", null)
    else:
        arr = _arrow_strings(t, "tag", raw, allow_int=False)
        null = _first(arr.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error("tag is missing (null); expected a non-empty tag", "tag", null)
        s = pd.Series(arr.to_pandas(), dtype=str).str.strip()
    s = s.reset_index(drop=True)
    empty = _first((s == "").to_numpy())
    if empty is not None:
        raise t.error("tag is empty; expected a non-empty tag", "tag", empty)
    huge = _first((s.str.len() > MAX_TEXT_CHARS).to_numpy())
    if huge is not None:
        raise t.error(f"tag of {len(s.iloc[huge]):,} characters; expected at most {MAX_TEXT_CHARS:,} (an "
                      "unclosed quote that swallowed the following rows?)", "tag", huge)
    return s


def _load_tags(path: Path, items: pd.DataFrame) -> pd.DataFrame:
    """The optional tags table; a header without rows is no tags (an empty frame), not an error."""
    t = _read_csv(path, TAGS) if path.suffix == ".csv" else _read_parquet(path, TAGS)
    context = _ids(t, "context_id")
    item = _ids(t, "item_id")
    _known_items(t, item, items)
    df = pd.DataFrame({"context_id": context, "item_id": item, "tag": _tag_texts(t)})
    if "timestamp" in t.columns:
        df["timestamp"] = _timestamps(t) if t.n_rows else np.zeros(0, dtype=np.int64)
    df["row"] = np.arange(len(df), dtype=np.int64)
    return df


def load_dataset(path, *, max_timestamp: int | None = None) -> Dataset:
    """Load and validate a dataset directory (see the module docstring for the contract).

    Args:
        path: the dataset directory.
        max_timestamp: keep only interactions with ``timestamp <= max_timestamp`` (a retrain "as
            of" a date). Ignored when the data has no timestamps. Every row is validated first.
            Tags with a timestamp are cut the same way (tags without one are all kept).

    Raises:
        DatasetError: naming file, column and row of the first problem found.
    """
    root = _check_root(path)
    items_file = find_table(root, ITEMS)
    interactions_file = find_table(root, INTERACTIONS)
    items = _load_items(items_file)
    interactions, has_ts = _load_interactions(interactions_file, items)
    if has_ts and max_timestamp is not None:
        earliest = int(interactions["timestamp"].min())
        interactions = interactions[interactions["timestamp"].to_numpy() <= int(max_timestamp)]
        interactions = interactions.reset_index(drop=True)
        if len(interactions) == 0:
            raise DatasetError(f"no interaction has timestamp <= {int(max_timestamp)} (max_timestamp); "
                               f"expected max_timestamp >= the earliest timestamp {earliest}",
                               file=interactions_file.name, column="timestamp")
    tags_file = find_optional_table(root, TAGS)
    tags = None
    if tags_file is not None:
        tags = _load_tags(tags_file, items)
        if max_timestamp is not None and "timestamp" in tags.columns:
            tags = tags[tags["timestamp"].to_numpy() <= int(max_timestamp)].reset_index(drop=True)
    return Dataset(root=root, items=items, interactions=interactions, has_timestamps=has_ts,
                   items_file=items_file, interactions_file=interactions_file, tags=tags, tags_file=tags_file)


def data_fingerprint(path) -> str:
    """sha256 (hex) over the names and bytes of the files ``load_dataset`` would read (the tags
    file only when there is one, so a dataset without tags hashes as it always has)."""
    if isinstance(path, Dataset):
        files = [path.items_file, path.interactions_file, path.tags_file]
    else:
        root = _check_root(path)
        files = [find_table(root, ITEMS), find_table(root, INTERACTIONS), find_optional_table(root, TAGS)]
    files = [f for f in files if f is not None]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + str(os.path.getsize(f)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
