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
All checks are vectorised; only the reported row is located one at a time. The files are read by
:mod:`pinsage.data.readers` and their columns checked by :mod:`pinsage.data.columns`; here the tables
are found, loaded and checked against each other.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pinsage.data import columns
from pinsage.data.errors import DatasetError
from pinsage.data.readers import Table, read_table
from pinsage.util.io import update_sha256

ITEMS = "items"
INTERACTIONS = "interactions"
TAGS = "tags"
ITEM_COLUMNS = ("item_id", "title", "text", "image_path")
INTERACTION_COLUMNS = ("context_id", "item_id", "weight", "timestamp")
TAG_COLUMNS = ("context_id", "item_id", "tag", "timestamp")
REQUIRED = {ITEMS: ("item_id",), INTERACTIONS: ("context_id", "item_id"), TAGS: ("context_id", "item_id", "tag")}
KNOWN = {ITEMS: ITEM_COLUMNS, INTERACTIONS: INTERACTION_COLUMNS, TAGS: TAG_COLUMNS}
MIN_ITEMS = 2  # "related items" needs at least one other item


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
# loading the tables

def _read(path: Path, kind: str, allow_empty: bool = False) -> Table:
    return read_table(path, REQUIRED[kind], KNOWN[kind], allow_empty=allow_empty)


def _load_items(path: Path) -> pd.DataFrame:
    t = _read(path, ITEMS)
    ids = columns.ids(t, "item_id")
    dup = ids.duplicated(keep="first").to_numpy()
    second = columns.first(dup)
    if second is not None:
        first = int(np.flatnonzero((ids == ids.iloc[second]).to_numpy())[0])
        raise t.error(f"duplicate item_id {columns.show(ids.iloc[second])}, already at row "
                      f"{t.user_row(first)}; expected every item_id once", "item_id", second)
    if t.n_rows < MIN_ITEMS:
        raise t.error(f"the catalogue has {t.n_rows} item; expected at least {MIN_ITEMS} items (related "
                      "items need another item to relate to)")
    return pd.DataFrame({"item_id": ids, "title": columns.texts(t, "title"),
                         "text": columns.texts(t, "text"),
                         "image_path": columns.image_paths(t, columns.texts(t, "image_path").str.strip())})


def _known_items(t: Table, item: pd.Series, items: pd.DataFrame) -> None:
    unknown = columns.first(~item.isin(items["item_id"]).to_numpy())
    if unknown is not None:
        raise t.error(f"unknown item {columns.show(item.iloc[unknown])}: not in the items table; expected an "
                      f"item_id of the items table{columns.unknown_hint(item.iloc[unknown], items['item_id'])}",
                      "item_id", unknown)


def _load_interactions(path: Path, items: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    t = _read(path, INTERACTIONS)
    context = columns.ids(t, "context_id")
    item = columns.ids(t, "item_id")
    _known_items(t, item, items)
    df = pd.DataFrame({"context_id": context, "item_id": item, "weight": columns.weights(t)})
    has_ts = "timestamp" in t.columns
    if has_ts:
        df["timestamp"] = columns.timestamps(t)
    df["row"] = np.arange(len(df), dtype=np.int64)
    return df, has_ts


def _load_tags(path: Path, items: pd.DataFrame) -> pd.DataFrame:
    """The optional tags table; a header without rows is no tags (an empty frame), not an error."""
    t = _read(path, TAGS, allow_empty=True)
    context = columns.ids(t, "context_id")
    item = columns.ids(t, "item_id")
    _known_items(t, item, items)
    df = pd.DataFrame({"context_id": context, "item_id": item, "tag": columns.tag_texts(t)})
    if "timestamp" in t.columns:
        df["timestamp"] = columns.timestamps(t) if t.n_rows else np.zeros(0, dtype=np.int64)
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
        update_sha256(h, f)
    return h.hexdigest()
