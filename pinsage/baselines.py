"""Baseline scorers, evaluated through the same full-ranking harness as PinSage.

Each returns ``score_fn(query indices (Q,)) -> (Q, N) scores`` over the whole catalogue.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

from .evaluation import cosine_scorer
from .graph import BipartiteGraph
from .walks import dense_visit_counts

Scorer = Callable[[np.ndarray], np.ndarray]


def popularity(graph: BipartiteGraph) -> Scorer:
    """Every query gets the same list: items by number of training interactions."""
    degree = graph.item_degree().astype(np.float32)
    return lambda q: np.broadcast_to(degree, (len(q), graph.n_items))


def annotation(annotation_vectors: np.ndarray) -> Scorer:
    """Cosine KNN on the word2vec annotation embeddings alone (paper's annotation baseline)."""
    return cosine_scorer(annotation_vectors)


def combined(blocks: dict[str, np.ndarray]) -> Scorer:
    """Cosine KNN on all raw features: each block standardised and scaled to unit length, so a
    4,096-d visual vector does not drown a scalar, then concatenated."""
    parts = []
    for matrix in blocks.values():
        m = matrix.astype(np.float64)
        m = (m - m.mean(axis=0)) / np.maximum(m.std(axis=0), 1e-9)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        parts.append(np.where(norms > 0, m / np.maximum(norms, 1e-12), 0.0))
    return cosine_scorer(np.concatenate(parts, axis=1).astype(np.float32))


def pixie(graph: BipartiteGraph, walks_per_item: int, restart_prob: float, max_walk_length: int,
          seed: int) -> Scorer:
    """Pixie (Eksombatchai et al. 2018): visit counts of random walks with restart from the query."""
    return lambda q: dense_visit_counts(graph, np.asarray(q), walks_per_item, restart_prob,
                                        max_walk_length, seed)


def itemknn(graph: BipartiteGraph) -> Scorer:
    """Item co-occurrence cosine: |C_i & C_j| / sqrt(|C_i| |C_j|) over training contexts."""
    rows = np.repeat(np.arange(graph.n_items), graph.item_degree())
    a = sp.csr_matrix((np.ones(graph.n_edges, dtype=np.float32), (rows, graph.item_contexts)),
                      shape=(graph.n_items, graph.n_contexts))
    a.sum_duplicates()
    a.data[:] = 1.0
    norms = np.sqrt(np.asarray(a.sum(axis=1)).ravel()).astype(np.float32)
    at = a.T.tocsr()

    def score(q: np.ndarray) -> np.ndarray:
        co = (a[np.asarray(q)] @ at).toarray()  # (Q, N) shared contexts
        denom = norms[np.asarray(q)][:, None] * norms[None, :]
        return np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)

    return score
