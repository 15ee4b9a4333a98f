"""Offline evaluation under full ranking (docs/evaluation.md, fixed).

rank = 1 + #items scoring higher + 1/2 #other items scoring the same, over every catalogue item
except the query; MRR is the untruncated mean of 1/rank; HR@K the share of ranks <= K.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

HIT_CUTOFFS = (10, 50, 100)


def ranks_from_scores(scores: np.ndarray, queries: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Tie-aware ranks of each target.

    Args:
        scores: (Q, N) scores of every catalogue item for each query (higher = more related).
        queries, targets: (Q,) catalogue indices.
    Returns:
        (Q,) float64 ranks, 1 = best; half ranks appear where the target ties with other items.
    """
    # float32 scores stay float32 (comparisons are exact in their own type; half the memory traffic)
    scores = np.array(scores, dtype=np.result_type(np.asarray(scores).dtype, np.float32), copy=True)
    rows = np.arange(len(queries))
    scores[rows, queries] = np.nan  # the query is not a candidate: NaN compares false both ways
    target_score = scores[rows, targets][:, None]  # (Q, 1)
    higher = np.count_nonzero(scores > target_score, axis=1)
    ties = np.count_nonzero(scores == target_score, axis=1) - 1  # minus the target itself
    return 1.0 + higher + 0.5 * ties


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        raise ValueError("no evaluation pairs to score")
    out = {"mrr": float(np.mean(1.0 / ranks))}
    for k in HIT_CUTOFFS:
        out[f"hr@{k}"] = float(np.mean(ranks <= k))
    return out


def evaluate_scorer(score_fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
                    targets: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Ranks of ``targets`` under ``score_fn(query chunk) -> (q, N) scores``, in the pairs' order.

    Each distinct query is scored once, ``chunk`` distinct queries at a time (memory: (chunk, N)
    scores): under ``tail`` a query item precedes a dozen targets on average, and a scorer's cost
    (walks, sparse products) is per query. ``score_fn`` must score a query the same whatever else is
    in its chunk (every scorer here does: walks are seeded per source).
    """
    return evaluate_offsets(score_fn, queries, targets, np.zeros((1, 0), dtype=np.float32), chunk)[0]


def evaluate_offsets(score_fn: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, targets: np.ndarray,
                     offsets: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Ranks under ``score_fn`` plus each row of ``offsets`` (W, N) (a per-candidate term, e.g. a
    popularity prior at W weights), scoring every query once for all W: (W, P) ranks.
    ``offsets`` of shape (W, 0) add nothing (:func:`evaluate_scorer`)."""
    queries, targets = np.asarray(queries), np.asarray(targets)
    ranks = np.zeros((len(offsets), len(queries)))
    if len(queries) == 0:
        return ranks
    unique, inverse = np.unique(queries, return_inverse=True)
    order = np.argsort(inverse, kind="stable")  # pairs grouped by distinct query
    first = np.searchsorted(inverse[order], np.arange(len(unique) + 1))  # (U + 1,) group starts
    for s in range(0, len(unique), chunk):
        scores = score_fn(unique[s:s + chunk])  # (c, N)
        pairs = order[first[s]:first[min(s + chunk, len(unique))]]  # every pair of these queries
        for p in range(0, len(pairs), chunk):  # (chunk, N) rows at a time
            idx = pairs[p:p + chunk]
            rows = scores[inverse[idx] - s]  # (m, N)
            for w, offset in enumerate(offsets):
                shifted = rows + offset[None, :] if offset.size else rows  # (m, N)
                ranks[w, idx] = ranks_from_scores(shifted, queries[idx], targets[idx])
    return ranks


def embedding_scorer(embeddings: np.ndarray, prior: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """Dot-product scores (cosine for unit vectors) against the whole catalogue, plus each
    candidate's ``prior`` (N,) in score units when given."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if prior is None:
        return lambda q: emb[q] @ emb.T
    bias = np.asarray(prior, dtype=np.float32)[None, :]  # (1, N)
    return lambda q: emb[q] @ emb.T + bias


def cosine_scorer(vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return embedding_scorer(np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0))


def markdown_table(results: dict[str, dict[str, float]], n_pairs: int, title: str) -> str:
    cols = ["mrr"] + [f"hr@{k}" for k in HIT_CUTOFFS]
    lines = [f"### {title} ({n_pairs} pairs, full ranking)", "",
             "| method | " + " | ".join(c.upper() for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, m in sorted(results.items(), key=lambda kv: -kv[1]["mrr"]):
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def ranks_on_pairs(item_ids: np.ndarray, embeddings: np.ndarray, query_ids, target_ids,
                   prior: np.ndarray | None = None) -> np.ndarray:
    """Full-ranking ranks of a model's embeddings on pairs given by item id (any catalogue).

    Args:
        item_ids: (N,) the model's catalogue; embeddings: (N, D) its unit vectors; prior: (N,) its
            popularity priors (score units) or None.
        query_ids, target_ids: (P,) item ids; every one must be in ``item_ids``.
    Returns:
        (P,) ranks over the model's own catalogue, the query excluded (the module's rank rule).
    """
    import pandas as pd  # here: only this table needs pandas; the ranking code is numpy

    row = pd.Index(np.asarray(item_ids, dtype=str))
    q = row.get_indexer(np.asarray(query_ids, dtype=str))
    t = row.get_indexer(np.asarray(target_ids, dtype=str))
    if (q < 0).any() or (t < 0).any():
        raise ValueError("ranks_on_pairs: a pair names an item outside the model's catalogue")
    return evaluate_scorer(embedding_scorer(embeddings, prior), q, t)
