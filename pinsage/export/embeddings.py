"""The embedding store: ``part-*.parquet`` shards (item_id, embedding[, prior]) plus ``manifest.json``.

A model's score of item i for query q is ``embedding_q . embedding_i + prior_i``: the unit vectors'
cosine plus the item's popularity prior (``export.embed.item_prior``, in the same units). Tables written
without a ``prior`` column score by the cosine alone.

Kept free of torch so that serving and evaluation read embeddings without loading a deep-learning stack.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage.util.io import atomic_dir, column_matrix, vector_column, write_json


def write_embeddings(directory: str | Path, item_ids: np.ndarray, embeddings: np.ndarray,
                     prior: np.ndarray | None = None, rows_per_part: int = 100_000) -> list[Path]:
    """Write ``part-*.parquet`` shards (item_id, embedding[, prior]) plus ``manifest.json``, atomically.

    ``prior``: (N,) each item's popularity prior in score units, or None for none.
    """
    directory = Path(directory)
    n_parts = max(1, math.ceil(len(item_ids) / rows_per_part))
    with atomic_dir(directory) as tmp:
        for p in range(n_parts):
            s, e = p * rows_per_part, min(len(item_ids), (p + 1) * rows_per_part)
            columns = {"item_id": pa.array(np.asarray(item_ids[s:e], dtype=object), pa.string()),
                       "embedding": vector_column(embeddings[s:e])}
            if prior is not None:
                columns["prior"] = pa.array(np.asarray(prior[s:e], dtype=np.float32))
            table = pa.table(columns)
            pq.write_table(table, tmp / f"part-{p:05d}.parquet")
        write_json(tmp / "manifest.json", {"n_items": int(len(item_ids)), "dim": int(embeddings.shape[1]),
                                           "parts": [f"part-{p:05d}.parquet" for p in range(n_parts)],
                                           "normalized": True,
                                           "score": "inner product (cosine)" if prior is None else
                                           "inner product (cosine) + the candidate's prior"})
    return sorted(directory.glob("part-*.parquet"))


def read_embeddings(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(item_ids (N,) str, embeddings (N, D) float32) from the shards, in part order."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{directory}: no part-*.parquet embedding shards")
    tables = [pq.read_table(p) for p in parts]
    ids = np.concatenate([t.column("item_id").to_numpy(zero_copy_only=False) for t in tables])
    matrix = np.concatenate([column_matrix(t.column("embedding")) for t in tables])
    return ids.astype(str), matrix


def read_prior(directory: str | Path) -> np.ndarray:
    """(N,) float32 popularity priors in part order; zeros for a table written without them."""
    parts = sorted(Path(directory).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{directory}: no part-*.parquet embedding shards")
    out = []
    for p in parts:
        names = pq.read_schema(p).names
        out.append(pq.read_table(p, columns=["prior"]).column("prior").to_numpy() if "prior" in names
                   else np.zeros(pq.read_metadata(p).num_rows, dtype=np.float32))
    return np.concatenate(out).astype(np.float32)
