"""Checking the columns of a dataset table: raw values in, clean values (or a refusal) out.

Each function takes a :class:`~pinsage.data.readers.Table` and one column and returns its values
normalised (ids and texts as stripped strings, weights as float64, timestamps as int64 unix seconds)
or raises a :class:`~pinsage.data.errors.DatasetError` naming the first offending row, with a hint
where a likely cause is recognisable (a date where unix seconds belong, milliseconds, a truncated
last record, ``'2.0'`` against ``'2'``). All checks are vectorised; only the reported row is located.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pinsage.data.errors import DatasetError
from pinsage.data.readers import Table

MAX_SECONDS = 10**11  # unix seconds beyond this (year 5138) are almost surely milliseconds
MAX_ID_CHARS = 1_000  # an id longer than this is a column mix-up (or an unclosed quote), not an id
MAX_TEXT_CHARS = 1_000_000  # a title/text/image_path field longer than this: an unclosed quote, a dump


def first(mask: np.ndarray) -> int | None:
    """0-based index of the first True in ``mask`` (the row to report), or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def show(value, limit: int = 60) -> str:
    """A value as quoted in a message, cut at ``limit`` characters."""
    s = str(value)
    if len(s) > limit:
        s = s[:limit] + "..."
    return repr(s)


def _is_string_type(ty: pa.DataType) -> bool:
    return (pa.types.is_string(ty) or pa.types.is_large_string(ty)
            or getattr(pa.types, "is_string_view", lambda _: False)(ty))


def _arrow_strings(t: Table, col: str, arr: pa.ChunkedArray, allow_int: bool) -> pa.ChunkedArray:
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


def ids(t: Table, col: str) -> pd.Series:
    """Required id column -> stripped str Series; refuses null or empty ids."""
    raw = t.columns[col]
    if isinstance(raw, pd.Series):
        s = raw.str.strip()
        null = first(s.isna().to_numpy())
        if null is not None:  # a short record: the field is absent altogether
            raise t.error(f"{col} is missing; expected a non-empty id", col, null)
    else:
        arr = _arrow_strings(t, col, raw, allow_int=True)
        null = first(arr.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error(f"{col} is missing (null); expected a non-empty id", col, null)
        s = pd.Series(arr.to_pandas(), dtype=str).str.strip()
    empty = first((s == "").to_numpy())
    if empty is not None:
        raise t.error(f"{col} is empty{_truncated_hint(t, empty)}; expected a non-empty id", col, empty)
    too_long = first((s.str.len() > MAX_ID_CHARS).to_numpy())
    if too_long is not None:
        raise t.error(f"{col} of {len(s.iloc[too_long]):,} characters ({show(s.iloc[too_long])}); "
                      f"expected an id of at most {MAX_ID_CHARS:,} characters (a shifted column or an "
                      "unclosed quote?)", col, too_long)
    return s.reset_index(drop=True)


def _truncated_hint(t: Table, idx: int) -> str:
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


def texts(t: Table, col: str) -> pd.Series:
    """Optional text column -> str Series with "" for absent values."""
    if col not in t.columns:
        return pd.Series([""] * t.n_rows, dtype=str)
    raw = t.columns[col]
    if isinstance(raw, pd.Series):
        s = raw.fillna("").reset_index(drop=True)
    else:
        arr = _arrow_strings(t, col, raw, allow_int=False)
        s = pd.Series(arr.to_pandas(), dtype=str).fillna("").reset_index(drop=True)
    huge = first((s.str.len() > MAX_TEXT_CHARS).to_numpy())
    if huge is not None:
        raise t.error(f"field of {len(s.iloc[huge]):,} characters; expected at most {MAX_TEXT_CHARS:,} "
                      "(an unclosed quote that swallowed the following rows, or data in the wrong column?)",
                      col, huge)
    return s


def _numbers(t: Table, col: str, integer_ok: bool = True) -> tuple[np.ndarray, pd.Series | None]:
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


def weights(t: Table) -> np.ndarray:
    if "weight" not in t.columns:
        return np.ones(t.n_rows, dtype=np.float64)
    values, raw = _numbers(t, "weight")
    with np.errstate(invalid="ignore"):
        bad = first(~(np.isfinite(values) & (values > 0)))
    if bad is not None:
        got = raw.iloc[bad] if raw is not None else values[bad]  # Parquet null -> nan
        raise t.error(f"expected a positive number, got {show(got)}", "weight", bad)
    return values


def timestamps(t: Table) -> np.ndarray:
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
        null = first(col.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error("timestamp is missing (null); expected integer unix seconds", "timestamp", null)
        values = col.to_numpy()
        finite = np.ones(len(values), dtype=bool)
        not_int = ~finite
    with np.errstate(invalid="ignore"):
        negative = finite & (values < 0)
        too_big = finite & (values > MAX_SECONDS)
    i = first(not_int | negative | too_big)
    if i is not None:
        got = raw.iloc[i] if raw is not None else (None if np.isnan(values[i]) else values[i])
        if too_big[i] and not not_int[i]:
            msg = f"timestamp {show(got)} looks like milliseconds; expected unix seconds"
        else:
            msg = f"expected integer unix seconds >= 0, got {show(got)}{_date_hint(got)}"
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


def image_paths(t: Table, paths: pd.Series) -> pd.Series:
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
    bad = first((given & (absolute | escapes)).to_numpy())
    if bad is not None:
        why = "is absolute" if absolute.iloc[bad] else "escapes the dataset directory"
        raise t.error(f"image_path {show(paths.iloc[bad])} {why}; expected a path relative to the "
                      "dataset directory that stays inside it", "image_path", bad)
    return paths


def unknown_hint(value: str, known: pd.Series) -> str:
    """'2.0' when the items say '2', '7' when they say '007': ids are text."""
    num = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    if pd.isna(num):
        return ""
    nums = pd.to_numeric(known, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    hit = np.flatnonzero(nums == float(num))
    if len(hit):
        return (f" (ids are compared as text: the items table has {show(known.iloc[int(hit[0])])}; write "
                "the same id the same way in both files)")
    return ""



def tag_texts(t: Table) -> pd.Series:
    """The required ``tag`` column -> stripped str Series; refuses null, empty or huge tags."""
    raw = t.columns["tag"]
    if isinstance(raw, pd.Series):
        s = raw.str.strip()
        null = first(s.isna().to_numpy())
        if null is not None:  # a short record: the field is absent altogether
            raise t.error(f"tag is missing{_truncated_hint(t, null)}; expected a non-empty tag", "tag", null)
    else:
        arr = _arrow_strings(t, "tag", raw, allow_int=False)
        null = first(arr.is_null().to_numpy(zero_copy_only=False))
        if null is not None:
            raise t.error("tag is missing (null); expected a non-empty tag", "tag", null)
        s = pd.Series(arr.to_pandas(), dtype=str).str.strip()
    s = s.reset_index(drop=True)
    empty = first((s == "").to_numpy())
    if empty is not None:
        raise t.error("tag is empty; expected a non-empty tag", "tag", empty)
    huge = first((s.str.len() > MAX_TEXT_CHARS).to_numpy())
    if huge is not None:
        raise t.error(f"tag of {len(s.iloc[huge]):,} characters; expected at most {MAX_TEXT_CHARS:,} (an "
                      "unclosed quote that swallowed the following rows?)", "tag", huge)
    return s

