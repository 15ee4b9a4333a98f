"""faiss nearest-neighbour index over the exported embeddings, saved with its id mapping.

With a popularity prior the index holds [z_i ; prior_i] and a query searches with [z_q ; 1]: the
inner product is then z_q . z_i + prior_i, the model's score, and the search stays exact.

The index directory also holds the version's answer table (``export.answers``): every item's top K,
from one batched search with this index, its sha256 in ``manifest.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage.export.answers import ANSWERS_FILE, AnswerTable, build_answers, read_answers, table_k, write_answers
from pinsage.util.io import atomic_dir, sha256_file, write_json


@dataclass
class IndexConfig:
    kind: str = "auto"  # auto | flat | hnsw
    hnsw_threshold: int = 200_000  # below this, exact search is fast enough and has recall 1
    hnsw_m: int = 32  # graph degree: recall/memory trade-off (faiss default range 16-64)
    ef_construction: int = 200
    ef_search: int = 128  # search breadth; raise for recall, lower for speed


def build_index(embeddings: np.ndarray, config: IndexConfig = IndexConfig(),
                prior: np.ndarray | None = None) -> faiss.Index:
    """Exact inner product for small catalogues, HNSW (inner product) above the threshold.

    embeddings: (N, D); prior: (N,) popularity priors (score units) or None. The index holds (N, D)
    vectors, or (N, D + 1) with the prior as the last coordinate (see :func:`query_vectors`).
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if prior is not None and np.any(prior):
        emb = np.hstack([emb, np.asarray(prior, dtype=np.float32)[:, None]])  # (N, D + 1)
    n, d = emb.shape
    kind = config.kind
    if kind == "auto":
        kind = "flat" if n < config.hnsw_threshold else "hnsw"
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    else:
        raise ValueError(f"index kind must be auto, flat or hnsw, got {config.kind!r}")
    index.add(emb)
    return index


def save_index(directory: str | Path, index: faiss.Index, item_ids: np.ndarray,
               embeddings: np.ndarray | None = None, answer_k: int | None = None) -> Path:
    """``index.faiss`` (faiss native format, no pickle) + ``ids.parquet`` (row -> item_id) + the answer
    table (``answers.parquet``, when ``embeddings`` (N, D), row r the embedding of ``item_ids[r]``, are
    given), written as one directory: a reader never sees an index without its table.

    ``answer_k``: items per answer row (default :func:`export.answers.table_k` of the catalogue size).
    """
    directory = Path(directory)
    manifest = {"n_items": int(index.ntotal), "dim": int(index.d), "type": type(index).__name__,
                "metric": "inner_product"}
    with atomic_dir(directory) as tmp:
        faiss.write_index(index, str(tmp / "index.faiss"))
        pq.write_table(pa.table({"item_id": pa.array(np.asarray(item_ids, dtype=object), pa.string())}),
                       tmp / "ids.parquet")
        if embeddings is not None:
            k = table_k(index.ntotal) if answer_k is None else answer_k
            write_answers(tmp / ANSWERS_FILE, item_ids, build_answers(index, query_vectors(index, embeddings), k))
            manifest["answers"] = {"file": ANSWERS_FILE, "k": k, "sha256": sha256_file(tmp / ANSWERS_FILE)}
        write_json(tmp / "manifest.json", manifest)
    return directory


def load_index(directory: str | Path) -> tuple[faiss.Index, np.ndarray]:
    directory = Path(directory)
    index = faiss.read_index(str(directory / "index.faiss"))
    ids = pq.read_table(directory / "ids.parquet").column("item_id").to_numpy(zero_copy_only=False)
    return index, ids.astype(str)


def answers_sha256(directory: str | Path) -> str:
    """The sha256 the index manifest records for its answer table ("" for an index without one)."""
    entry = json.loads((Path(directory) / "manifest.json").read_text()).get("answers")
    return "" if entry is None else entry["sha256"]


def load_answers(directory: str | Path, n_rows: int) -> AnswerTable | None:
    """The index's answer table, checked against the sha256 its manifest records; None for an index
    saved without one (an older version)."""
    directory = Path(directory)
    entry = json.loads((directory / "manifest.json").read_text()).get("answers")
    if entry is None:
        return None
    path = directory / entry["file"]
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 {sha256_file(path)} differs from the {entry['sha256']} recorded in "
                         f"{directory / 'manifest.json'}; the answer table is damaged, rebuild the index")
    return read_answers(path, n_rows)


def query_vectors(index: faiss.Index, vectors: np.ndarray) -> np.ndarray:
    """(Q, D) embeddings -> what to search ``index`` with: [z_q ; 1] (Q, D + 1) when the index holds a
    prior coordinate, else the embeddings themselves."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if index.d == vectors.shape[1] + 1:
        vectors = np.hstack([vectors, np.ones((len(vectors), 1), dtype=np.float32)])  # (Q, D + 1)
    elif index.d != vectors.shape[1]:
        raise ValueError(f"query vectors have {vectors.shape[1]} dimensions, the index {index.d}")
    return vectors


def search(index: faiss.Index, item_ids: np.ndarray, vectors: np.ndarray, k: int,
           exclude_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids and scores per query vector, the query's own item left out.

    Returns ``(ids (Q, k) str, scores (Q, k) float32)``; rows are padded with '' / -inf when the
    catalogue has fewer than k other items.
    """
    vectors = query_vectors(index, vectors)
    extra = 1 if exclude_ids is not None else 0
    scores, rows = index.search(vectors, min(index.ntotal, k + extra))
    out_ids = np.full((len(vectors), k), "", dtype=object)
    out_scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
    for q in range(len(vectors)):
        keep = rows[q] >= 0
        ids_q, scores_q = item_ids[rows[q][keep]], scores[q][keep]
        if exclude_ids is not None:
            own = ids_q != exclude_ids[q]
            ids_q, scores_q = ids_q[own], scores_q[own]
        out_ids[q, :len(ids_q[:k])] = ids_q[:k]
        out_scores[q, :len(scores_q[:k])] = scores_q[:k]
    return out_ids.astype(str), out_scores
