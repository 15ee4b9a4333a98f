"""Bipartite item <-> context graph in CSR form, built from training interactions only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinsage.util.io import read_npz, write_npz


@dataclass
class BipartiteGraph:
    """Two CSR adjacency structures over dense indices.

    ``item_indptr``/``item_contexts``/``item_weights``: for item i, its contexts are
    ``item_contexts[item_indptr[i]:item_indptr[i+1]]`` with edge weights alongside.
    ``context_indptr``/``context_items``/``context_weights``: the same from the context side.
    Items that never appear in training have an empty row (they are still part of the catalogue).
    """

    n_items: int
    n_contexts: int
    item_indptr: np.ndarray  # (n_items + 1,) int64
    item_contexts: np.ndarray  # (E,) int32
    item_weights: np.ndarray  # (E,) float32
    context_indptr: np.ndarray  # (n_contexts + 1,) int64
    context_items: np.ndarray  # (E,) int32
    context_weights: np.ndarray  # (E,) float32

    @property
    def n_edges(self) -> int:
        return int(self.item_contexts.shape[0])

    def item_degree(self) -> np.ndarray:
        return np.diff(self.item_indptr).astype(np.int64)

    def context_degree(self) -> np.ndarray:
        return np.diff(self.context_indptr).astype(np.int64)

    def save(self, path) -> None:
        write_npz(path, n=np.array([self.n_items, self.n_contexts], dtype=np.int64),
                  item_indptr=self.item_indptr, item_contexts=self.item_contexts,
                  item_weights=self.item_weights, context_indptr=self.context_indptr,
                  context_items=self.context_items, context_weights=self.context_weights)

    @classmethod
    def load(cls, path) -> "BipartiteGraph":
        a = read_npz(path)
        return cls(int(a["n"][0]), int(a["n"][1]), a["item_indptr"], a["item_contexts"],
                   a["item_weights"], a["context_indptr"], a["context_items"], a["context_weights"])


def _csr(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int):
    order = np.lexsort((cols, rows))  # sort by row, then column: deterministic layout
    counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, cols[order].astype(np.int32), weights[order].astype(np.float32)


def build_graph(item_index: np.ndarray, context_index: np.ndarray, n_items: int, n_contexts: int,
                weights: np.ndarray | None = None) -> BipartiteGraph:
    """Build both CSR directions from parallel arrays of (item, context[, weight]) edges.

    Args:
        item_index: (E,) dense item indices in ``[0, n_items)``.
        context_index: (E,) dense context indices in ``[0, n_contexts)``.
        weights: (E,) positive edge weights; all ones when None.
    """
    item_index = np.asarray(item_index, dtype=np.int64)
    context_index = np.asarray(context_index, dtype=np.int64)
    if weights is None:
        weights = np.ones(len(item_index), dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if not (len(item_index) == len(context_index) == len(weights)):
        raise ValueError("item_index, context_index and weights must have the same length")
    if len(item_index) and (item_index.min() < 0 or item_index.max() >= n_items):
        raise ValueError(f"item index out of range [0, {n_items})")
    if len(context_index) and (context_index.min() < 0 or context_index.max() >= n_contexts):
        raise ValueError(f"context index out of range [0, {n_contexts})")
    ip, ic, iw = _csr(item_index, context_index, weights, n_items)
    cp, ci, cw = _csr(context_index, item_index, weights, n_contexts)
    return BipartiteGraph(n_items, n_contexts, ip, ic, iw, cp, ci, cw)
