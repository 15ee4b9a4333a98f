"""Related items for a query item: the one answer path behind the service, the served model, the CLI
and the report. No pandas: plain lists and numpy, so a serving process stays small.

A :class:`Catalogue` is what an answer needs: the faiss index with its row -> item_id mapping, the
version's answer table (``export.answers``: every item's top K, precomputed with that index), the
item embeddings (the query vectors) and the titles. It reads them from a run directory (what
``python -m pinsage run --out OUT`` writes) or from a registered version's artifacts, so
``recommend --run OUT``, ``recommend --model models:/pinsage@champion``, the pyfunc and the
recommender service rank with the same code.

An answer is a row of the table when the item has one and k <= K; otherwise (k > K, an item added
to an index saved without a table) one batched search of the index, which ranks exactly as the table
was built. :meth:`Catalogue.answers` answers a batch query by query: a bad query (an unknown item id,
an empty id, a k below 1) gets an :class:`Answer` whose ``error`` names it, and the others are
answered; a served batch never fails as a whole because one caller sent one stale id.

``resolve`` turns what a person types into an item id: an exact id first, then a title (exact,
case-insensitive), then a part of a title; several matches raise :class:`AmbiguousItem` with the
candidates, so a CLI can list them instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pinsage.export.answers import AnswerTable
from pinsage.export.embeddings import read_embeddings
from pinsage.export.index import load_answers, load_index, search
from pinsage.run.layout import RunDir

DEFAULT_K = 10
OUTPUT_COLUMNS = ["query_item_id", "rank", "item_id", "title", "score", "error"]
MAX_CANDIDATES = 20  # an ambiguous query lists at most this many
# One request's bounds: the index search costs queries x the largest k, so an unbounded request (a
# million queries, or k = 10^9) would hold a serving worker and its memory; a client pages instead.
MAX_K = 1_000
MAX_RESULTS = 100_000  # queries x the largest k of one request


class ItemNotFound(LookupError):
    pass


class AmbiguousItem(LookupError):
    def __init__(self, query: str, candidates: list[tuple[str, str | None]]):
        self.query, self.candidates = query, candidates  # (item_id, title) pairs
        super().__init__(f"{query!r} matches {len(candidates)} items; give one of their ids")


class TooLarge(ValueError):
    """A request over :data:`MAX_RESULTS`: refused as a whole (a client sends smaller ones)."""


@dataclass
class Answer:
    """One query's related items, best first; ``error`` (and no items) for a bad query."""

    query: str
    item_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None
    unknown: bool = False  # the error is an item id the catalogue does not hold (an HTTP 404)


def check_k(k, where: str = "k") -> tuple[int | None, str | None]:
    """``(k, None)`` for an integer 1..MAX_K (None / NaN: DEFAULT_K), else ``(None, reason)``."""
    if k is None or (isinstance(k, float) and math.isnan(k)):
        return DEFAULT_K, None
    if isinstance(k, bool):
        return None, f"{where} must be an integer >= 1, got {k!r}"
    try:
        value = int(k)
        exact = float(k) == value
    except (TypeError, ValueError, OverflowError):
        return None, f"{where} must be an integer >= 1, got {k!r}"
    if not exact or value < 1:
        return None, f"{where} must be an integer >= 1, got {k!r}"
    if value > MAX_K:
        return None, f"{where} must be <= {MAX_K}, got {value}"
    return value, None


class Catalogue:
    def __init__(self, index, index_ids: np.ndarray, item_ids: np.ndarray, embeddings: np.ndarray,
                 titles: dict[str, str | None], table: AnswerTable | None = None):
        """index: faiss index (inner product) over rows ``index_ids`` (n,) str; item_ids (N,) str and
        embeddings (N, D) float32: the query vectors; titles: item_id -> title or None; table: the
        answer table over the index rows, or None."""
        self.index = index
        self.index_ids, self.item_ids = np.asarray(index_ids, dtype=str), np.asarray(item_ids, dtype=str)
        self.embeddings, self.titles, self.table = embeddings, titles, table
        self.row_of = {item: r for r, item in enumerate(self.item_ids.tolist())}  # embedding rows
        same = len(self.index_ids) == len(self.item_ids) and bool(np.all(self.index_ids == self.item_ids))
        self.table_row_of = self.row_of if same else {item: r for r, item in enumerate(self.index_ids.tolist())}
        self._lower: list[tuple[str, str]] | None = None  # (item_id, lower-case title), for resolve

    @classmethod
    def from_dirs(cls, index_dir: str | Path, embeddings_dir: str | Path, items: str | Path) -> "Catalogue":
        index, index_ids = load_index(index_dir)
        ids, emb = read_embeddings(embeddings_dir)
        table = pq.read_table(items, columns=None)
        item_col = [str(i) for i in table.column("item_id").to_pylist()]
        title = table.column("title").to_pylist() if "title" in table.column_names else [None] * len(item_col)
        titles = {i: (None if t is None else str(t)) for i, t in zip(item_col, title)}
        return cls(index, index_ids, ids, emb, titles, load_answers(index_dir, index.ntotal))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "Catalogue":
        """The catalogue of a run directory (``index/``, ``embeddings/``, ``prepare/items.parquet``)."""
        run = RunDir(run_dir)
        for path in (run.index / "index.faiss", run.embeddings / "manifest.json", run.items):
            if not path.exists():
                raise FileNotFoundError(f"{run.root} is not a finished run directory: {run.relative(path)} is "
                                        "missing (run `python -m pinsage run --out DIR` first)")
        return cls.from_dirs(run.index, run.embeddings, run.items)

    def __len__(self) -> int:
        return len(self.item_ids)

    def title(self, item_id: str) -> str | None:
        return self.titles.get(item_id)

    def resolve(self, text: str) -> str:
        """An item id from an id or (part of) a title; raises ItemNotFound / AmbiguousItem."""
        query = str(text).strip()
        if not query:
            raise ItemNotFound("empty item: give an item id or part of a title")
        if query in self.row_of:
            return query
        if self._lower is None:
            self._lower = [(i, (self.titles.get(i) or "").lower()) for i in self.item_ids.tolist()]
        low = query.lower()
        for match in (lambda t: t == low, lambda t: low in t):
            found = [i for i, t in self._lower if match(t)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise AmbiguousItem(query, [(i, self.titles.get(i)) for i in found])
        raise ItemNotFound(f"no item has the id {query!r} or a title containing it")

    def answers(self, item_ids, k=DEFAULT_K) -> list[Answer]:
        """Top-k related items of each query, the query itself left out; an error Answer per bad query.

        ``item_ids``: sequence of ids; ``k``: an int for all queries, or one value per query (None /
        NaN for the default). Raises :class:`TooLarge` when the valid queries ask for more than
        MAX_RESULTS items in all.
        """
        raw = list(item_ids)
        ks = [k] * len(raw) if k is None or np.isscalar(k) else list(k)
        if len(ks) != len(raw):
            raise ValueError(f"k has {len(ks)} values for {len(raw)} item ids")
        out: list[Answer] = []
        want: dict[int, int] = {}  # position -> k, for the valid queries
        for r, (q, kv) in enumerate(zip(raw, ks)):
            q = "" if q is None or (isinstance(q, float) and math.isnan(q)) else str(q).strip()
            kk, bad = check_k(kv, where=f"row {r} (item_id {q!r}): k")
            out.append(Answer(q))
            if not q:
                out[r].error = f"row {r}: empty item_id"
            elif q not in self.row_of:
                out[r].error, out[r].unknown = f"unknown item_id {q!r}: not in the model's catalogue", True
            elif bad:
                out[r].error = bad
            else:
                want[r] = kk
        if want and len(want) * max(want.values()) > MAX_RESULTS:
            raise TooLarge(f"the request asks for {len(want)} queries x k = {max(want.values())}, more than "
                           f"{MAX_RESULTS:,} results; send fewer queries or a smaller k per request")
        searched = []
        for r, kk in want.items():
            row = self.table_row_of.get(out[r].query) if self.table is not None and kk <= self.table.k else None
            if row is None:
                searched.append(r)
            else:
                self._from_table(out[r], row, kk)
        if searched:
            self._from_index([out[r] for r in searched], [want[r] for r in searched])
        return out

    def _from_table(self, answer: Answer, row: int, k: int) -> None:
        related, scores = self.table.related[row, :k], self.table.scores[row, :k]
        keep = related >= 0
        answer.item_ids = self.index_ids[related[keep]].tolist()
        answer.scores = scores[keep].tolist()

    def _from_index(self, pending: list[Answer], ks: list[int]) -> None:
        queries = [a.query for a in pending]
        kmax = int(min(max(ks), max(1, self.index.ntotal - 1)))
        rows = [self.row_of[q] for q in queries]
        ids, scores = search(self.index, self.index_ids, self.embeddings[rows], kmax,
                             exclude_ids=np.asarray(queries))  # (Q, kmax)
        for j, (a, kk) in enumerate(zip(pending, ks)):
            keep = ids[j][:kk] != ""
            a.item_ids, a.scores = ids[j][:kk][keep].tolist(), scores[j][:kk][keep].tolist()

    def related(self, item_ids, k=DEFAULT_K) -> list[dict]:
        """:meth:`answers` as flat records (OUTPUT_COLUMNS): one per related item, ranks from 1, and
        one record with ``error`` (rank, item_id, title and score None) per bad query."""
        records = []
        for a in self.answers(item_ids, k):
            if a.error is not None:
                records.append({"query_item_id": a.query, "rank": None, "item_id": None, "title": None,
                                "score": None, "error": a.error})
                continue
            for rank, (item, score) in enumerate(zip(a.item_ids, a.scores), start=1):
                records.append({"query_item_id": a.query, "rank": rank, "item_id": item,
                                "title": self.titles.get(item), "score": float(score), "error": None})
        return records


def format_table(records: list[dict], width: int = 60) -> str:
    """A plain-text table (rank, item, title, score) of one query's records."""
    rows = [("rank", "item", "title", "score")]
    for r in records:
        title = "" if r["title"] is None else str(r["title"])
        if len(title) > width:
            title = title[:width - 1] + "…"
        rows.append((str(r["rank"]), str(r["item_id"]), title, f"{float(r['score']):.4f}"))
    w = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = [f"{row[0]:>{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {row[3]:>{w[3]}}" for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def format_candidates(err: AmbiguousItem, limit: int = MAX_CANDIDATES) -> str:
    shown = err.candidates[:limit]
    w = max(len("item"), *(len(str(i)) for i, _ in shown))
    lines = [f"{err.query!r} matches {len(err.candidates)} items; choose one with --item ID:",
             f"  {'item':<{w}}  title"]
    lines += [f"  {str(i):<{w}}  {'' if t is None else t}" for i, t in shown]
    if len(err.candidates) > limit:
        lines.append(f"  … and {len(err.candidates) - limit} more (be more specific)")
    return "\n".join(lines)


def run_source(run: str):
    """``(Catalogue, answer)`` for ``recommend --run OUT``: ``answer(item_ids, k)`` ranks in-process."""
    catalogue = Catalogue.from_run(run)
    return catalogue, catalogue.related


def recommend_main(item: str, k: int, load, source: str, out=print, err=print) -> int:
    """``python -m pinsage recommend``: print the table; 2 when the item is unknown or ambiguous.

    ``load() -> (Catalogue, answer)`` opens the source (:func:`run_source`, or the registered model
    through ``tasks.recommend.registered_source``: the library itself never talks to MLflow);
    ``answer(item_ids, k)`` returns :meth:`Catalogue.related` records. ``source`` names it in messages.
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
    records = answer([item_id], int(k))
    failed = [r["error"] for r in records if r["error"] is not None]
    if failed:
        err(f"error: {failed[0]}")
        return 2
    title = catalogue.title(item_id)
    out(f"items related to {item_id}" + (f" ({title})" if title else "") + f", from {source}:")
    out(format_table(records))
    return 0
