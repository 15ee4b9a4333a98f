"""Related items for a query item: the one answer path behind the served model, the CLI and the report.

A :class:`Catalogue` is what an answer needs: the faiss index with its row -> item_id mapping, the
item embeddings (the query vectors) and the titles. It reads them from a run directory (what
``python -m pinsage run --out OUT`` writes) or from the artifacts of the registered MLflow model, so
``recommend --run OUT``, ``recommend --model models:/pinsage@champion`` and the HTTP server all rank
with the same code.

``related`` answers a batch row by row: a bad row (an unknown item id, an empty id, a k below 1)
gets a row with an ``error`` message naming it, and the other rows are answered; a served batch
never fails as a whole because one caller sent one stale id.

``resolve`` turns what a person types into an item id: an exact id first, then a title (exact,
case-insensitive), then a part of a title; several matches raise :class:`AmbiguousItem` with the
candidates, so a CLI can list them instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

DEFAULT_K = 10
OUTPUT_COLUMNS = ["query_item_id", "rank", "item_id", "title", "score", "error"]
MAX_CANDIDATES = 20  # an ambiguous query lists at most this many
# One request's bounds: the index search costs rows x the largest k, so an unbounded request (a
# million rows, or k = 10^9) would hold a serving worker and its memory; a client pages instead.
MAX_K = 1_000
MAX_RESULTS = 100_000  # rows x the largest k of one request


class ItemNotFound(LookupError):
    pass


class AmbiguousItem(LookupError):
    def __init__(self, query: str, candidates: pd.DataFrame):
        self.query, self.candidates = query, candidates  # item_id, title
        super().__init__(f"{query!r} matches {len(candidates)} items; give one of their ids")


def _text_or_none(values) -> np.ndarray:
    """Object array with None (never NaN) for missing values: JSON shows them as null."""
    s = pd.Series(values, dtype=object)
    return s.where(s.notna(), None).to_numpy(dtype=object)


def empty_answer() -> pd.DataFrame:
    return _frame([], [], [], [], [], [])


def _frame(query, rank, item, title, score, error) -> pd.DataFrame:
    return pd.DataFrame({
        "query_item_id": pd.Series(query, dtype=object),
        "rank": pd.array(rank, dtype="Int64"),  # nullable: an error row has no rank
        "item_id": pd.Series(_text_or_none(item), dtype=object),
        "title": pd.Series(_text_or_none(title), dtype=object),
        "score": pd.array(score, dtype="Float64"),
        "error": pd.Series(_text_or_none(error), dtype=object),
    })[OUTPUT_COLUMNS]


@dataclass
class Catalogue:
    index: object  # faiss.Index over the embeddings (inner product)
    index_ids: np.ndarray  # (n_index,) str, row -> item_id
    item_ids: np.ndarray  # (N,) str, embedding rows
    embeddings: np.ndarray  # (N, D) float32 unit vectors
    titles: pd.Series  # item_id -> title (may be None)

    def __post_init__(self):
        self.row_of = pd.Index(self.item_ids)
        self._lower_titles = self.titles.fillna("").astype(str).str.lower()

    @classmethod
    def from_dirs(cls, index_dir: str | Path, embeddings_dir: str | Path, items: str | Path) -> "Catalogue":
        from pinsage.export.embeddings import read_embeddings
        from pinsage.export.index import load_index

        index, index_ids = load_index(index_dir)
        ids, emb = read_embeddings(embeddings_dir)
        table = pq.read_table(items)
        item_col = table.column("item_id").to_numpy(zero_copy_only=False).astype(str)
        title = (table.column("title").to_pylist() if "title" in table.column_names else [None] * len(item_col))
        return cls(index, index_ids, ids, emb, pd.Series(_text_or_none(title), index=item_col, dtype=object))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "Catalogue":
        """The catalogue of a run directory (``index/``, ``embeddings/``, ``prepare/items.parquet``)."""
        from pinsage.run.layout import RunDir

        run = RunDir(run_dir)
        for path in (run.index / "index.faiss", run.embeddings / "manifest.json", run.items):
            if not path.exists():
                raise FileNotFoundError(f"{run.root} is not a finished run directory: {run.relative(path)} is "
                                        "missing (run `python -m pinsage run --out DIR` first)")
        return cls.from_dirs(run.index, run.embeddings, run.items)

    def title(self, item_id: str):
        return self.titles.get(item_id)

    def resolve(self, text: str) -> str:
        """An item id from an id or (part of) a title; raises ItemNotFound / AmbiguousItem."""
        query = str(text).strip()
        if not query:
            raise ItemNotFound("empty item: give an item id or part of a title")
        if query in self.row_of:
            return query
        low = query.lower()
        for matches in (self._lower_titles == low,
                        self._lower_titles.str.contains(low, regex=False)):
            found = [i for i in self.titles.index[matches.to_numpy()] if i in self.row_of]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                cand = pd.DataFrame({"item_id": found, "title": [self.titles[i] for i in found]})
                raise AmbiguousItem(query, cand)
        raise ItemNotFound(f"no item has the id {query!r} or a title containing it")

    def related(self, item_ids, k=DEFAULT_K) -> pd.DataFrame:
        """Top-k related items of each query, the query itself left out; one error row per bad query.

        ``item_ids``: sequence of ids; ``k``: an int for all rows, or one value per row (None / NaN
        for the default). Returns OUTPUT_COLUMNS, rows in query order, ranks from 1.
        """
        from pinsage.export.index import search

        raw = list(item_ids)
        n = len(raw)
        ks = np.full(n, DEFAULT_K, dtype=object) if k is None else (
            np.full(n, k, dtype=object) if np.isscalar(k) else np.asarray(list(k), dtype=object))
        if len(ks) != n:
            raise ValueError(f"k has {len(ks)} values for {n} item ids")
        queries = ["" if q is None or q != q else str(q).strip() for q in raw]  # q != q: NaN
        errors: list[str | None] = [None] * n
        kk = np.zeros(n, dtype=np.int64)
        for r, (q, kv) in enumerate(zip(queries, ks)):
            if kv is None or (isinstance(kv, float) and kv != kv) or kv is pd.NA:
                kv = DEFAULT_K
            try:
                kk[r] = int(kv)
                bad_k = kk[r] < 1 or float(kv) != kk[r]
            except (TypeError, ValueError):
                bad_k = True
            if not q:
                errors[r] = f"row {r}: empty item_id"
            elif q not in self.row_of:
                errors[r] = f"unknown item_id {q!r}: not in the model's catalogue"
            elif bad_k:
                errors[r] = f"row {r} (item_id {q!r}): k must be an integer >= 1, got {kv!r}"
            elif kk[r] > MAX_K:
                errors[r] = f"row {r} (item_id {q!r}): k must be <= {MAX_K}, got {kk[r]}"
        ok = np.array([e is None for e in errors], dtype=bool)
        if ok.any() and int(ok.sum()) * int(kk[ok].max()) > MAX_RESULTS:
            raise ValueError(f"the request asks for {int(ok.sum())} rows x k = {int(kk[ok].max())}, more than "
                             f"{MAX_RESULTS:,} results; send fewer rows or a smaller k per request")
        hits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if ok.any():
            rows = self.row_of.get_indexer([queries[r] for r in np.flatnonzero(ok)])
            kmax = int(min(kk[ok].max(), max(1, self.index.ntotal - 1)))
            ids, scores = search(self.index, self.index_ids, self.embeddings[rows], kmax,
                                 exclude_ids=np.asarray([queries[r] for r in np.flatnonzero(ok)]))
            for j, r in enumerate(np.flatnonzero(ok)):
                keep = ids[j][:kk[r]] != ""
                hits[r] = ids[j][:kk[r]][keep], scores[j][:kk[r]][keep]
        cols: dict[str, list] = {c: [] for c in OUTPUT_COLUMNS}
        for r in range(n):
            if errors[r] is not None:
                rel, sc, ranks, err = [None], [None], [None], [errors[r]]
            else:
                rel, sc = list(hits[r][0]), [float(s) for s in hits[r][1]]
                ranks, err = list(range(1, len(rel) + 1)), [None] * len(rel)
            cols["query_item_id"] += [queries[r] or (None if raw[r] is None else str(raw[r]))] * len(rel)
            cols["rank"] += ranks
            cols["item_id"] += rel
            cols["title"] += [None if i is None else self.titles.get(i) for i in rel]
            cols["score"] += sc
            cols["error"] += err
        return _frame(*(cols[c] for c in OUTPUT_COLUMNS))


def format_table(answer: pd.DataFrame, query_title: str | None = None, width: int = 60) -> str:
    """A plain-text table (rank, item, title, score) of one query's answer."""
    rows = [("rank", "item", "title", "score")]
    for r in answer.itertuples(index=False):
        title = "" if r.title is None else str(r.title)
        if len(title) > width:
            title = title[:width - 1] + "…"
        rows.append((str(r.rank), str(r.item_id), title, f"{float(r.score):.4f}"))
    w = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [f"{row[0]:>{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {row[3]:>{w[3]}}" for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_candidates(err: AmbiguousItem, limit: int = MAX_CANDIDATES) -> str:
    cand = err.candidates
    w = max(len("item"), *(len(str(i)) for i in cand["item_id"].head(limit)))
    lines = [f"{err.query!r} matches {len(cand)} items; choose one with --item ID:",
             f"  {'item':<{w}}  title"]
    lines += [f"  {str(i):<{w}}  {'' if t is None else t}" for i, t in
              zip(cand["item_id"].head(limit), cand["title"].head(limit))]
    if len(cand) > limit:
        lines.append(f"  … and {len(cand) - limit} more (be more specific)")
    return "\n".join(lines)


def run_source(run: str):
    """``(Catalogue, answer)`` for ``recommend --run OUT``: ``answer(item_ids, k)`` ranks in-process."""
    catalogue = Catalogue.from_run(run)
    return catalogue, catalogue.related


def recommend_main(item: str, k: int, load, source: str, out=print, err=print) -> int:
    """``python -m pinsage recommend``: print the table; 2 when the item is unknown or ambiguous.

    ``load() -> (Catalogue, answer)`` opens the source (:func:`run_source`, or the registered model
    through ``tasks.mlflow_model.registered_source``: the library itself never talks to MLflow);
    ``answer(item_ids, k)`` returns the ``related`` table. ``source`` names it in messages.
    """
    if k < 1:
        err(f"error: -k must be >= 1, got {k}")
        return 2
    try:
        catalogue, answer = load()
    except Exception as e:  # a missing run, an unknown model URI, an unreachable registry: say which
        err(f"error: cannot load {source}: {e}")
        return 2
    try:
        item_id = catalogue.resolve(item)
    except AmbiguousItem as e:
        err(format_candidates(e))
        return 2
    except ItemNotFound as e:
        err(f"error: {e}")
        return 2
    table = answer([item_id], int(k))
    if table["error"].notna().any():
        err(f"error: {table['error'].dropna().iloc[0]}")
        return 2
    title = catalogue.title(item_id)
    out(f"items related to {item_id}" + (f" ({title})" if title else "") + f", from {source}:")
    out(format_table(table))
    return 0
