"""Baseline scorers, evaluated through the same full-ranking harness as PinSage.

Each returns ``score_fn(query indices (Q,)) -> (Q, N) scores`` over the whole catalogue.
EASE and RP3beta have hyperparameters: ``ease_scorers`` / ``rp3beta_scorers`` yield one scorer per
grid point and :func:`select_on_validation` keeps the best by validation MRR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from pinsage.eval.metrics import cosine_scorer, evaluate_scorer, metrics_from_ranks
from pinsage.graph.bipartite import BipartiteGraph
from pinsage.graph.walks import dense_visit_counts

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


# ---------------------------------------------------------------------------------------------
# EASE (Steck, WWW 2019) and RP3beta (Christoffel et al. 2015; Paudel et al. 2017), tuned on validation

EASE_LAMBDAS = (10.0, 50.0, 200.0, 500.0, 1000.0, 2000.0)  # in units of the mean squared edge weight
EASE_MAX_ITEMS = 30_000  # dense (n x n) system over the items with interactions: above it EASE is skipped
RP3BETA_ALPHAS = (0.5, 1.0)
RP3BETA_BETAS = (0.0, 0.25, 0.5, 0.75)

Params = dict[str, float]


def interaction_matrix(graph: BipartiteGraph) -> sp.csr_matrix:
    """X: (C, N) float64 training matrix, X[c, i] = weight of edge (i, c) (repeated edges summed)."""
    items = np.repeat(np.arange(graph.n_items), graph.item_degree())  # (E,)
    return sp.csr_matrix((graph.item_weights.astype(np.float64), (graph.item_contexts, items)),
                         shape=(graph.n_contexts, graph.n_items))


def ease_skip_reason(graph: BipartiteGraph, max_items: int = EASE_MAX_ITEMS) -> str | None:
    """Why EASE cannot run on this graph (its dense system is too large), or None."""
    n = int((graph.item_degree() > 0).sum())
    if n <= max_items:
        return None
    return (f"{n} items with training interactions (catalogue of {graph.n_items}) exceed the "
            f"dense-inverse limit of {max_items}")


def ease_scorers(graph: BipartiteGraph, lambdas: Iterable[float] = EASE_LAMBDAS) -> Iterator[tuple[Params, Scorer]]:
    """One EASE scorer per lambda: score of candidate j for query q is B[q, j].

    X (C, n) over the n items with interactions; G = X^T X (n, n); P = (G + lam I)^-1;
    B = I - P diag(1/diag P), i.e. B[i, j] = -P[i, j] / P[j, j] (i != j), B[j, j] = 0. Items without
    interactions have zero rows and columns in G, so their B entries are exactly 0 (left out of P).
    ``lambdas`` are multiplied by the mean squared edge weight (1 for unweighted graphs), so a
    global rescaling of the weights does not change B.

    The n x n inverse is factorised on whichever Gram matrix is smaller: ``_ease_primal`` (Cholesky
    of G + lam I per lambda) when there are at least half as many contexts as items, else
    ``_ease_dual`` (one eigendecomposition of X X^T, (C, C), serves every lambda).
    """
    x = interaction_matrix(graph)
    active = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)  # (n,) items with interactions
    x = x[:, active]
    scale = float(np.mean(x.data ** 2)) if x.nnz else 1.0
    lambdas = [float(lam) for lam in lambdas]
    solve = _ease_dual if 2 * x.shape[0] < x.shape[1] else _ease_primal
    for lam, rows in zip(lambdas, solve(x, [lam * scale for lam in lambdas])):
        yield {"lambda": lam}, _on_catalogue(rows, active, graph.n_items)


def _gram(m: sp.spmatrix, dtype=np.float64) -> np.ndarray:
    """m^T m as a dense (k, k) array for a sparse (r, k) m, built from dense column blocks of m of at
    most 2^25 entries, so the (possibly dense-ish) sparse product never materialises."""
    m = sp.csc_matrix(m, dtype=dtype)
    mt = m.T.tocsr()
    out = np.empty((m.shape[1], m.shape[1]), dtype=dtype)
    step = max(1, 2**25 // max(1, m.shape[0]))
    for s in range(0, m.shape[1], step):
        out[:, s:s + step] = mt @ m[:, s:s + step].toarray()  # (k, step)
    return out


def _ease_primal(x: sp.csr_matrix, lambdas: list[float]) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """Per lambda: P = (G + lam I)^-1 by LAPACK potrf + potri in float32 (potri fills the lower
    triangle only: P[i, j] = c[max(i, j), min(i, j)]). Yields ``rows(local queries (Q,)) -> (Q, n)``
    rows of B, B[i, j] = -P[i, j] / P[j, j], B[i, i] = 0, read from the triangle per query chunk."""
    gram = _gram(x, np.float32)  # (n, n)
    cols = np.arange(gram.shape[0])
    for lam in lambdas:
        a = gram.copy()
        a[cols, cols] += lam
        c, info = sla.lapack.spotrf(a, lower=True, overwrite_a=True)
        if info == 0:
            c, info = sla.lapack.spotri(c, lower=True, overwrite_c=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"EASE: G + {lam} I is not positive definite (LAPACK info {info})")
        del a

        def rows(q, c=c, neg_inv_diag=-1.0 / np.diag(c)):
            p = np.where(cols[None, :] <= q[:, None], c[q], c[:, q].T)  # (Q, n) rows of P
            b = p * neg_inv_diag
            b[np.arange(len(q)), q] = 0.0
            return b

        yield rows
        del c, rows  # the caller holds the one it keeps: only it, G and the next system stay alive


def _ease_dual(x: sp.csr_matrix, lambdas: list[float]) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """Per lambda: rows of B through the Woodbury identity; one eigendecomposition serves every lambda.

    With K = X X^T = U diag(s) U^T (C, C) and W = X^T U (n, C):
    P = (G + lam I)^-1 = (I - X^T (K + lam I)^-1 X) / lam = (I - W diag(1/(s + lam)) W^T) / lam, so
    P[j, j] = (1 - sum_k W[j, k]^2 / (s_k + lam)) / lam and, for i != j,
    B[i, j] = -P[i, j] / P[j, j] = (W[i] diag(1/(s + lam)) W[j]^T) / (lam P[j, j]).
    The eigendecomposition and the diagonal are float64 (1 - sum cancels for small lam), the
    per-query products float32.
    """
    s, u = np.linalg.eigh(_gram(x.T))  # (C,), (C, C)
    w = np.asarray(x.T @ u)  # (n, C)
    w_sq = w * w  # (n, C)
    w = w.astype(np.float32)
    for lam in lambdas:
        d = 1.0 / (np.maximum(s, 0.0) + lam)  # (C,)
        p_diag = (1.0 - w_sq @ d) / lam  # (n,)

        def rows(q, d=d.astype(np.float32), denom=(lam * p_diag).astype(np.float32)):
            b = ((w[q] * d) @ w.T) / denom  # (Q, n)
            b[np.arange(len(q)), q] = 0.0
            return b

        yield rows


def _on_catalogue(rows: Callable[[np.ndarray], np.ndarray], active: np.ndarray, n_items: int) -> Scorer:
    """Lift ``rows(local indices) -> (Q, n)`` over the n ``active`` items to a (Q, N) catalogue scorer:
    inactive candidates score 0, an inactive query scores 0 everywhere."""
    local = np.full(n_items, -1, dtype=np.int64)
    local[active] = np.arange(len(active))

    def score(q: np.ndarray) -> np.ndarray:
        lq = local[np.asarray(q)]  # (Q,)
        out = np.zeros((len(lq), n_items), dtype=np.float32)  # (Q, N)
        known = lq >= 0
        if known.any():
            out[np.ix_(known, active)] = rows(lq[known])
        return out

    return score


def rp3beta_scorers(graph: BipartiteGraph, alphas: Iterable[float] = RP3BETA_ALPHAS,
                    betas: Iterable[float] = RP3BETA_BETAS) -> Iterator[tuple[Params, Scorer]]:
    """One RP3beta scorer per (alpha, beta), as Dacrema et al.'s RP3betaRecommender computes it.

    P_ic (N, C): item -> context, the binary item rows L1-normalised, P_ic[i, c] = 1 / deg(i);
    P_ci (C, N): context -> item, the weighted context rows L1-normalised, P_ci[c, j] = w_cj / sum_j' w_cj'.
    Each entry is raised to alpha after normalisation. deg(j) = number of training contexts of j.
    score(q, j) = (P_ic^alpha P_ci^alpha)[q, j] / deg(j)^beta  (0 for items without interactions).
    Rows of P3 are computed per query chunk; no top-k pruning of the similarity.
    """
    x = interaction_matrix(graph)  # (C, N)
    binary = x.copy()
    binary.data[:] = 1.0
    degree = np.asarray(binary.sum(axis=0)).ravel()  # (N,)
    p_ic = _row_normalised(binary.T.tocsr())  # (N, C)
    p_ci = _row_normalised(x)  # (C, N)
    for alpha in alphas:
        a_ic, a_ci = p_ic.power(alpha).tocsr(), p_ci.power(alpha).tocsr()
        for beta in betas:
            penalty = np.zeros(graph.n_items)  # (N,)
            np.power(degree, -beta, out=penalty, where=degree > 0)

            def score(q, a_ic=a_ic, a_ci=a_ci, penalty=penalty):
                return ((a_ic[np.asarray(q)] @ a_ci).toarray() * penalty).astype(np.float32)  # (Q, N)

            yield {"alpha": float(alpha), "beta": float(beta)}, score


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    return sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ m


@dataclass
class Selection:
    """The grid point with the best validation MRR (first one on ties), its scorer, and the grid's
    validation MRRs: ``grid`` = [{**params, "validation_mrr": ...}, ...] in grid order."""

    params: Params
    scorer: Scorer
    grid: list[dict]


def select_on_validation(candidates: Iterable[tuple[Params, Scorer]], queries: np.ndarray,
                         targets: np.ndarray) -> Selection:
    """Evaluate every (params, scorer) on the validation pairs only and keep the best by MRR.
    Scorers are consumed one at a time, so at most two (the best so far and the current) are alive."""
    best, grid = None, []
    for params, scorer in candidates:
        mrr = metrics_from_ranks(evaluate_scorer(scorer, queries, targets))["mrr"]
        grid.append({**params, "validation_mrr": mrr})
        if best is None or mrr > best[2]:
            best = (params, scorer, mrr)
        del scorer  # before the generator builds the next one (the loop would still hold this one)
    if best is None:
        raise ValueError("empty hyperparameter grid")
    return Selection(best[0], best[1], grid)


@dataclass
class TunedBaselines:
    """EASE and RP3beta at their validation-chosen settings (see ``select_on_validation``).

    ``scorers``: method -> scorer; ``hyperparameters``: method -> chosen params; ``selection``:
    method -> the grid with each point's validation MRR; ``skipped``: method -> why it did not run.
    """

    scorers: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def tuned_baselines(g: BipartiteGraph, valid_queries: np.ndarray, valid_targets: np.ndarray,
                    ease_max_items: int) -> TunedBaselines:
    """Choose EASE's lambda and RP3beta's (alpha, beta) on the validation pairs (they never see test);
    EASE is skipped above ``ease_max_items`` items with interactions."""
    out = TunedBaselines()
    grids = {"rp3beta": lambda: rp3beta_scorers(g)}
    reason = ease_skip_reason(g, ease_max_items)
    if reason is None:
        grids = {"ease": lambda: ease_scorers(g), **grids}
    else:
        out.skipped["ease"] = reason
    for name, grid in grids.items():
        chosen = select_on_validation(grid(), valid_queries, valid_targets)
        out.scorers[name], out.hyperparameters[name], out.selection[name] = chosen.scorer, chosen.params, chosen.grid
    return out


def settings_note(tuned: TunedBaselines) -> str:
    """Markdown lines under the metrics tables: the chosen settings and what was skipped."""
    lines = [f"- {name}: " + ", ".join(f"{k} {v:g}" for k, v in params.items()) + " (best validation MRR of "
             f"{len(tuned.selection[name])} settings)" for name, params in tuned.hyperparameters.items()]
    lines += [f"- {name}: skipped, {why}" for name, why in tuned.skipped.items()]
    return "\n".join(lines) + "\n" if lines else ""
