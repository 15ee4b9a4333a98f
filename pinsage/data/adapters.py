"""Adapters from MovieLens layouts to the dataset contract (see ``pinsage.data.dataset``).

* ml-latest / ml-latest-small / ml-25m style: ``movies.csv``, ``ratings.csv``, optional
  ``tags.csv`` (UTF-8, with header).
* ml-1m / ml-10m style: ``movies.dat``, ``ratings.dat``, optional ``tags.dat`` (``::`` separated,
  ISO-8859-1, no header); ``users.dat`` is ignored.

Mapping: every rating >= ``min_rating`` becomes an interaction (context = user, weight 1.0, the
rating itself is not used as a weight, timestamp kept). Items are all movies of the movies file,
rated or not; ``title`` is the movie title; ``text`` is the genres (``(no genres listed)``
dropped), lower-cased and joined with spaces. The users' tags are *not* baked into ``text``: they
are users' actions, and a held-out user's later tag would describe its target. They go to the
contract's optional ``tags.parquet`` (context_id = user, item_id = movie, tag stripped, timestamp;
empty tags and tags of unlisted movies dropped, file order kept), and ``prepare`` appends to each
item's text only the tags the training split could have seen (:mod:`pinsage.data.tags`).

The output directory holds ``items.parquet``, ``interactions.parquet``, ``tags.parquet`` (when the
source has tags) and the source ``README.txt`` (which carries the licence) when present; it is
written to a temporary directory and renamed into place as a whole, so ``dst_dir`` is replaced
entirely.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pinsage.data.dataset import DatasetError, INTERACTIONS, ITEMS, TAGS, _check_root
from pinsage.util.io import atomic_dir, write_table

ADAPTER_VERSION = "2"  # bump when the conversion changes, so cached conversions are redone
NO_GENRES = "(no genres listed)"


def _text(genres: pd.Series) -> pd.Series:
    """genres 'A|B' -> 'a b' (lower-cased)."""
    g = genres.fillna("").str.split("|").map(
        lambda parts: " ".join(p.strip() for p in parts if p.strip() and p.strip() != NO_GENRES))
    return g.astype(str).str.strip().str.lower().astype(str)


def _tags_table(tags: pd.DataFrame, movies: pd.Series) -> pa.Table | None:
    """tags: userId, movieId, tag, timestamp (str) -> the contract's tags table; None when none is left."""
    t = tags.assign(tag=tags["tag"].fillna("").astype(str).str.strip(),
                    userId=tags["userId"].astype(str).str.strip())
    t = t[(t["tag"] != "") & t["movieId"].isin(movies)]  # like ratings: unlisted movies dropped
    if not len(t):
        return None
    return pa.table({
        "context_id": pa.array(t["userId"].to_numpy(dtype=object), pa.string()),
        "item_id": pa.array(t["movieId"].to_numpy(dtype=object), pa.string()),
        "tag": pa.array(t["tag"].to_numpy(dtype=object), pa.string()),
        "timestamp": pa.array(pd.to_numeric(t["timestamp"]).to_numpy(dtype=np.int64)),
    })


def _write_contract(dst_dir, movies: pd.DataFrame, ratings: pd.DataFrame,
                    tags: pd.DataFrame | None, min_rating: float, readme: Path | None) -> Path:
    """movies: movieId, title, genres (str); ratings: userId, movieId (str), rating, timestamp;
    tags: userId, movieId (str), tag, timestamp."""
    movies = movies.assign(movieId=movies["movieId"].str.strip())
    items = pa.table({
        "item_id": pa.array(movies["movieId"].to_numpy(dtype=object), pa.string()),
        "title": pa.array(movies["title"].fillna("").str.strip().to_numpy(dtype=object),
                          pa.string()),
        "text": pa.array(_text(movies["genres"]).to_numpy(dtype=object), pa.string()),
    })
    rating = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(dtype=np.float64)
    keep = rating >= float(min_rating)
    movie_ids = ratings["movieId"].str.strip()
    keep &= movie_ids.isin(movies["movieId"]).to_numpy()  # drop ratings of unlisted movies
    kept = ratings[keep]
    interactions = pa.table({
        "context_id": pa.array(kept["userId"].str.strip().to_numpy(dtype=object), pa.string()),
        "item_id": pa.array(movie_ids[keep].to_numpy(dtype=object), pa.string()),
        "weight": pa.array(np.ones(len(kept), dtype=np.float64)),
        "timestamp": pa.array(pd.to_numeric(kept["timestamp"]).to_numpy(dtype=np.int64)),
    })
    tag_table = _tags_table(tags, movies["movieId"]) if tags is not None else None
    dst = Path(dst_dir)
    with atomic_dir(dst) as tmp:
        write_table(tmp / f"{ITEMS}.parquet", items)
        write_table(tmp / f"{INTERACTIONS}.parquet", interactions)
        if tag_table is not None:
            write_table(tmp / f"{TAGS}.parquet", tag_table)
        if readme is not None and readme.is_file():
            shutil.copyfile(readme, tmp / "README.txt")
    return dst


def _need(src: Path, *names: str) -> None:
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise DatasetError(f"not a MovieLens directory: missing {', '.join(missing)} in {src}",
                           file=str(src))


def movielens_csv_to_contract(src_dir, dst_dir, *, min_rating: float = 4.0) -> Path:
    """Convert an ml-latest(-small) style directory (movies.csv, ratings.csv, tags.csv)."""
    src = _check_root(src_dir)
    _need(src, "movies.csv", "ratings.csv")
    opts = dict(encoding="utf-8-sig", na_filter=False)
    movies = pd.read_csv(src / "movies.csv", dtype=str, **opts)
    ratings = pd.read_csv(src / "ratings.csv", dtype={"userId": str, "movieId": str,
                                                      "rating": str, "timestamp": str}, **opts)
    tags = None
    if (src / "tags.csv").is_file():
        tags = pd.read_csv(src / "tags.csv", dtype=str, **opts)
        tags = tags.assign(movieId=tags["movieId"].str.strip())
    return _write_contract(dst_dir, movies, ratings, tags, min_rating, src / "README.txt")


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """'::'-separated, headerless -> all-str DataFrame (fast C parser).

    ml-1m is ISO-8859-1; text that happens to be valid UTF-8 is read as UTF-8 (ISO-8859-1 text
    with accented letters essentially never is), so re-encoded copies work too.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("iso-8859-1")
    text = text.replace("::", "\x1f")
    return pd.read_csv(io.StringIO(text), sep="\x1f", header=None, names=names, dtype=str,
                       na_filter=False, quoting=csv.QUOTE_NONE, engine="c")


def movielens_dat_to_contract(src_dir, dst_dir, *, min_rating: float = 4.0) -> Path:
    """Convert an ml-1m / ml-10m style directory (movies.dat, ratings.dat, tags.dat optional)."""
    src = _check_root(src_dir)
    _need(src, "movies.dat", "ratings.dat")
    movies = _read_dat(src / "movies.dat", ["movieId", "title", "genres"])
    ratings = _read_dat(src / "ratings.dat", ["userId", "movieId", "rating", "timestamp"])
    tags = None
    if (src / "tags.dat").is_file():
        tags = _read_dat(src / "tags.dat", ["userId", "movieId", "tag", "timestamp"])
        tags = tags.assign(movieId=tags["movieId"].str.strip())
    return _write_contract(dst_dir, movies, ratings, tags, min_rating, src / "README.txt")


def _layout(src: Path) -> str | None:
    names = {p.name for p in src.iterdir()}
    if {"movies.csv", "ratings.csv"} <= names:
        return "csv"
    if {"movies.dat", "ratings.dat"} <= names:
        return "dat"
    return None


def _source_hash(src: Path, kind: str, min_rating: float) -> str:
    h = hashlib.sha256(f"movielens-{kind}-v{ADAPTER_VERSION}-min{float(min_rating)!r}".encode())
    for name in ("movies", "ratings", "tags", "README"):
        f = src / (f"{name}.txt" if name == "README" else f"{name}.{kind}")
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]


def resolve_dataset_dir(path, cache_dir, *, min_rating: float = 4.0) -> Path:
    """Return a directory that follows the contract.

    ``path`` itself when it holds items.{csv,parquet} and interactions.{csv,parquet}; for a
    MovieLens directory (CSV or .dat layout) the conversion
    ``cache_dir/<name>-<12 hex of the source files' hash>``, converted once and reused after.

    Raises:
        DatasetError: when ``path`` is missing or neither layout is recognised.
    """
    src = _check_root(path)
    has = {kind: any((src / f"{kind}{ext}").is_file() for ext in (".parquet", ".csv"))
           for kind in (ITEMS, INTERACTIONS)}
    if all(has.values()):
        return src
    if any(has.values()):
        missing = ITEMS if not has[ITEMS] else INTERACTIONS
        raise DatasetError(f"missing {missing} table: looked for {missing}.parquet and "
                           f"{missing}.csv in {src}", file=str(src))
    kind = _layout(src)
    if kind is None:
        found = sorted(p.name for p in src.iterdir())[:20]
        raise DatasetError(
            "not a dataset directory: expected items.{csv,parquet} + interactions.{csv,parquet} "
            "(the dataset contract), or a MovieLens directory (movies.csv + ratings.csv, or "
            f"movies.dat + ratings.dat); found {found}", file=str(src))
    dst = Path(cache_dir) / f"{src.name}-{_source_hash(src, kind, min_rating)}"
    if (dst / f"{ITEMS}.parquet").is_file() and (dst / f"{INTERACTIONS}.parquet").is_file():
        return dst
    convert = movielens_csv_to_contract if kind == "csv" else movielens_dat_to_contract
    return convert(src, dst, min_rating=min_rating)
