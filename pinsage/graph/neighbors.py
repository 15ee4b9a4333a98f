"""The tables the walks produce: visit ranks per source and the importance-neighbour table.

``VisitTable`` is the top-M visited items of every source with their counts (its deeper ranks are
the curriculum hard negatives); ``Neighbors`` is its first T columns with L1-normalised counts as the
importance-pooling weights (paper Sec. 3.1), stored as ``neighbors.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinsage.util.io import write_table


@dataclass
class VisitTable:
    items: np.ndarray  # (N, M) int32 top-M visited item indices per source, best first, -1 padded
    counts: np.ndarray  # (N, M) int32 visit counts alongside, 0 where padded




@dataclass
class Neighbors:
    items: np.ndarray  # (N, T) int32 neighbour indices; padded entries = 0 with weight 0 (use mask)
    weights: np.ndarray  # (N, T) float32 L1-normalised importance (rows sum to 1, or all zero)
    mask: np.ndarray  # (N, T) bool, True where a real neighbour (always a prefix of the row)

    @property
    def top_t(self) -> int:
        return int(self.items.shape[1])

    def save(self, path, item_ids: np.ndarray) -> None:
        """Write ``neighbors.parquet`` atomically.

        Columns: ``item_id`` (string), ``neighbors`` (fixed-size list<int32>[T], dense indices, 0
        where padded), ``neighbor_ids`` (list<string>, real neighbours only, best first) and
        ``weights`` (fixed-size list<float32>[T]). The mask is recovered from the ``neighbor_ids``
        lengths, so it must be a prefix of every row (as built by :func:`neighbors_from_visits`).
        """
        item_ids = np.asarray(item_ids).astype(str)
        n, t = self.items.shape
        if len(item_ids) != n:
            raise ValueError(f"item_ids has {len(item_ids)} entries, table has {n} rows")
        mask = np.asarray(self.mask, dtype=bool)
        n_real = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(t)[None, :] < n_real[:, None]):
            raise ValueError("mask must be a prefix of every row (real neighbours first)")
        items = np.ascontiguousarray(self.items, dtype=np.int32)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(n_real, out=offsets[1:])
        real_ids = pa.array(item_ids[items[mask]], type=pa.string())  # row-major = per-row prefix
        table = pa.table({
            "item_id": pa.array(item_ids, type=pa.string()),
            "neighbors": pa.FixedSizeListArray.from_arrays(pa.array(items.reshape(-1)), t),
            "neighbor_ids": pa.ListArray.from_arrays(pa.array(offsets), real_ids),
            "weights": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(self.weights, dtype=np.float32).reshape(-1)), t),
        })
        write_table(path, table)

    @classmethod
    def load(cls, path) -> "Neighbors":
        table = pq.read_table(Path(path), columns=["neighbors", "neighbor_ids", "weights"])
        n = table.num_rows
        nb = table.column("neighbors").combine_chunks()
        t = nb.type.list_size
        items = np.asarray(nb.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
        w = table.column("weights").combine_chunks()
        weights = np.asarray(w.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        n_real = pc.list_value_length(table.column("neighbor_ids")).to_numpy(
            zero_copy_only=False)
        n_real = np.nan_to_num(np.asarray(n_real, dtype=np.float64)).astype(np.int64)
        mask = np.arange(t)[None, :] < n_real[:, None]
        return cls(items.reshape(n, t), weights.reshape(n, t), mask)


def neighbors_from_visits(visits: VisitTable, top_t: int) -> Neighbors:
    """First ``top_t`` columns of a visit table, L1-normalised counts as weights, explicit mask.

    Rows with fewer than ``top_t`` visited items are padded (index 0, weight 0, mask False); a row
    with no visit at all (isolated item) is all-masked with zero weights.
    """
    if top_t < 0:
        raise ValueError(f"top_t must be >= 0, got {top_t}")
    n, m = visits.items.shape
    items = np.full((n, top_t), -1, dtype=np.int32)
    counts = np.zeros((n, top_t), dtype=np.float64)
    k = min(m, top_t)
    items[:, :k] = visits.items[:, :k]
    counts[:, :k] = visits.counts[:, :k]
    mask = items >= 0
    counts[~mask] = 0.0
    total = counts.sum(axis=1, keepdims=True)
    weights = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return Neighbors(np.where(mask, items, 0).astype(np.int32), weights.astype(np.float32), mask)
