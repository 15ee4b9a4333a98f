"""The answer table: every item's top K related items, precomputed with the version's own index.

A related-items page asks the same question for the same item all day, so the answers are computed
once per version, the way precomputed item neighbourhoods have been served since item-based
collaborative filtering (Sarwar et al., WWW 2001): one batched search over the whole catalogue with
the index the version ships, K + 1 hits per item, the item itself left out. Serving then reads a row
instead of searching; a request for more than K items, or for an item the table lacks, goes to the
index (``pinsage.serve.recommend``).

``answers.parquet`` (beside ``index.faiss`` in the index directory; its sha256 in the index manifest)::

    item_id    string                     row r of the index's ids.parquet, in the same order
    related    fixed_size_list<int32>[K]  index rows of the K related items, best first (-1: none)
    scores     fixed_size_list<float>[K]  their scores (the index's inner products; -inf: none)

K is :data:`ANSWER_K` (100) while the table fits in :data:`TABLE_BYTES` (2 GiB: 8 bytes per entry,
so up to 2.7 million items), then as many as fit, never fewer than :data:`MIN_K`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ANSWERS_FILE = "answers.parquet"
ANSWER_K = 100  # a page shows 10-50 related items; 100 leaves room for filtering and paging
TABLE_BYTES = 2 << 30  # int32 row + float32 score per entry: N * K * 8 bytes at most
MIN_K = 10
SEARCH_BATCH = 4096  # queries per faiss call: (B, K + 1) results, a few MB


def table_k(n_items: int, k: int = ANSWER_K, budget: int = TABLE_BYTES) -> int:
    """K for a catalogue of ``n_items``: ``k`` (at most n_items - 1) while the table fits the budget."""
    fits = budget // (8 * max(1, n_items))
    return max(0, min(k, n_items - 1, max(MIN_K, fits)))


@dataclass
class AnswerTable:
    related: np.ndarray  # (N, K) int32 index rows, -1 where an item has fewer than K others
    scores: np.ndarray  # (N, K) float32, -inf where related is -1

    @property
    def k(self) -> int:
        return int(self.related.shape[1])


def build_answers(index: faiss.Index, queries: np.ndarray, k: int) -> AnswerTable:
    """Top-k of every index row, its own row left out.

    index: the version's index over N rows; queries: (N, D') what row r searches with (the index's
    query vectors of row r's item: ``export.index.query_vectors``); k: hits per row.
    """
    n = index.ntotal
    if len(queries) != n:
        raise ValueError(f"{len(queries)} query vectors for an index of {n} rows")
    related = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    if k == 0:
        return AnswerTable(related, scores)
    for s in range(0, n, SEARCH_BATCH):
        e = min(n, s + SEARCH_BATCH)
        got_s, got_r = index.search(np.ascontiguousarray(queries[s:e], dtype=np.float32), min(n, k + 1))  # (B, k+1)
        own = got_r == np.arange(s, e)[:, None]
        # a row without its own item among the hits (ties, an approximate index) drops its last hit
        own[~own.any(axis=1), -1] = True
        keep = ~own & (got_r >= 0)
        for b in range(e - s):
            r, sc = got_r[b][keep[b]][:k], got_s[b][keep[b]][:k]
            related[s + b, :len(r)], scores[s + b, :len(sc)] = r, sc
    return AnswerTable(related, scores)


def _fixed_list(matrix: np.ndarray, kind: pa.DataType) -> pa.FixedSizeListArray:
    n, k = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).reshape(-1), kind), k)  # (N*K,)


def write_answers(path: str | Path, item_ids: np.ndarray, table: AnswerTable) -> None:
    """``answers.parquet`` at ``path`` (the caller writes it inside an atomic directory)."""
    pq.write_table(pa.table({"item_id": pa.array(np.asarray(item_ids, dtype=object), pa.string()),
                             "related": _fixed_list(table.related, pa.int32()),
                             "scores": _fixed_list(table.scores, pa.float32())}), path)


def read_answers(path: str | Path, n_rows: int) -> AnswerTable:
    """The table of an index of ``n_rows`` rows; refuses one built for another index."""
    t = pq.read_table(path, columns=["related", "scores"])
    if t.num_rows != n_rows:
        raise ValueError(f"{path}: {t.num_rows} rows, the index has {n_rows}; rebuild the index")
    out = []
    for name, dtype in (("related", np.int32), ("scores", np.float32)):
        col = t.column(name).combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
        out.append(flat.reshape(n_rows, col.type.list_size))  # (N*K,) -> (N, K)
    return AnswerTable(*out)
