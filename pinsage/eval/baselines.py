"""Baseline scorers, evaluated through the same full-ranking harness as PinSage.

Each returns ``score_fn(query indices (Q,)) -> (Q, N) scores`` over the whole catalogue.
EASE, RP3beta and ItemKNN have hyperparameters: their treatment of the interaction weights (``raw``,
``log1p``, ``binary``) and numeric ones (EASE's lambda; RP3beta's alpha, beta; ItemKNN's shrinkage).
``*_model(graph, weights)`` builds what a treatment's settings share once and returns ``params ->
scorer``; the settings are chosen on validation pairs by :mod:`pinsage.eval.tuning`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Union

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from pinsage.eval.metrics import cosine_scorer
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


CONTENT_BLOCKS = ("annotation", "visual")  # the content features (features.build.VECTOR_COLUMNS)


def combined(blocks: dict[str, np.ndarray]) -> Scorer:
    """The paper's combined baseline, content only: cosine KNN on the annotation (word2vec) and, when
    there are images, visual (VGG16) blocks, each standardised per dimension and scaled to unit length,
    so a 4,096-d visual vector does not drown the 256-d annotation, then concatenated.

    The other blocks of ``feature_blocks`` (``log_degree``, ``has_image``) are not content and are
    ignored: a one-column block, standardised and unit-scaled, is the sign of the standardised value,
    which would add a popularity gate. Without images this is the cosine of the standardised
    (centred) annotation vectors: ``annotation`` up to the centring and per-dimension scaling.
    """
    parts = [_unit_rows(blocks[name]) for name in CONTENT_BLOCKS if name in blocks]
    if not parts:
        raise ValueError(f"combined: no content block ({', '.join(CONTENT_BLOCKS)}) among {sorted(blocks)}")
    return cosine_scorer(np.concatenate(parts, axis=1).astype(np.float32))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """(N, D) standardised per column, then each row scaled to unit length (zero rows stay zero)."""
    m = matrix.astype(np.float64)
    m = (m - m.mean(axis=0)) / np.maximum(m.std(axis=0), 1e-9)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(norms > 0, m / np.maximum(norms, 1e-12), 0.0)


def pixie(graph: BipartiteGraph, walks_per_item: int, restart_prob: float, max_walk_length: int,
          seed: int) -> Scorer:
    """Pixie (Eksombatchai et al. 2018): visit counts of random walks with restart from the query."""
    return lambda q: dense_visit_counts(graph, np.asarray(q), walks_per_item, restart_prob,
                                        max_walk_length, seed)


def itemknn(graph: BipartiteGraph, weights: str = "binary", shrink: float = 0.0) -> Scorer:
    """Item co-occurrence cosine over training contexts: with binary weights and no shrinkage
    |C_i & C_j| / sqrt(|C_i| |C_j|). In general x_i . x_j / (|x_i| |x_j| + shrink) with x_i the item's
    column of the (treated, see :func:`interaction_matrix`) training matrix."""
    return itemknn_model(graph, weights)({"shrink": shrink})


def itemknn_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
    """``params -> scorer`` for any shrinkage (see :func:`itemknn`): the item norms are computed once here."""
    a = interaction_matrix(graph, weights).T.tocsr().astype(np.float32)  # (N, C)
    norms = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel()).astype(np.float32)  # (N,)
    at = a.T.tocsr()

    def model(params: Params) -> Scorer:
        shrink = np.float32(params["shrink"])

        def score(q: np.ndarray) -> np.ndarray:
            co = (a[np.asarray(q)] @ at).toarray()  # (Q, N) weighted co-occurrence
            denom = norms[np.asarray(q)][:, None] * norms[None, :] + shrink
            return np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)

        return score

    return model


# ---------------------------------------------------------------------------------------------
# EASE (Steck, WWW 2019) and RP3beta (Christoffel et al. 2015; Paudel et al. 2017), tuned on validation
# with ItemKNN: their grids' initial values and the weight treatments (the search: pinsage.eval.tuning)

EASE_LAMBDAS = (10.0, 50.0, 200.0, 500.0, 1000.0, 2000.0)  # in units of the mean squared edge weight
EASE_MAX_ITEMS = 30_000  # dense (n x n) system over the items with interactions: above it EASE is skipped
RP3BETA_ALPHAS = (0.5, 1.0)
RP3BETA_BETAS = (0.0, 0.25, 0.5, 0.75)
ITEMKNN_SHRINKS = (0.0, 10.0, 100.0)
WEIGHTS = ("raw", "log1p", "binary")  # treatments of the interaction weights, chosen on validation too

Params = dict[str, Union[float, str]]


def interaction_matrix(graph: BipartiteGraph, weights: str = "raw") -> sp.csr_matrix:
    """X: (C, N) float64 training matrix, X[c, i] = the weight of edge (i, c) (repeated edges summed),
    treated by ``weights``: ``raw`` as stored (e.g. listening counts), ``log1p`` log(1 + w), ``binary`` 1."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    items = np.repeat(np.arange(graph.n_items), graph.item_degree())  # (E,)
    x = sp.csr_matrix((graph.item_weights.astype(np.float64), (graph.item_contexts, items)),
                      shape=(graph.n_contexts, graph.n_items))
    x.sum_duplicates()
    if weights == "log1p":
        x.data = np.log1p(x.data)
    elif weights == "binary":
        x.data[:] = 1.0
    return x


def ease_skip_reason(graph: BipartiteGraph, max_items: int = EASE_MAX_ITEMS) -> str | None:
    """Why EASE cannot run on this graph (its dense system is too large), or None."""
    n = int((graph.item_degree() > 0).sum())
    if n <= max_items:
        return None
    return (f"{n} items with training interactions (catalogue of {graph.n_items}) exceed the "
            f"dense-inverse limit of {max_items}")


def ease_scorers(graph: BipartiteGraph, lambdas: Iterable[float] = EASE_LAMBDAS,
                 weights: str = "raw") -> Iterator[tuple[Params, Scorer]]:
    """One EASE scorer per lambda: score of candidate j for query q is B[q, j].

    X (C, n) over the n items with interactions (weights treated as ``weights``); G = X^T X (n, n);
    P = (G + lam I)^-1; B = I - P diag(1/diag P), i.e. B[i, j] = -P[i, j] / P[j, j] (i != j),
    B[j, j] = 0. Items without interactions have zero rows and columns in G, so their B entries are
    exactly 0 (left out of P). ``lambdas`` are multiplied by the mean squared (treated) edge weight
    (1 for binary), so a global rescaling of the weights does not change B.

    The n x n inverse is factorised on whichever Gram matrix is smaller: ``_ease_primal_solver`` (Cholesky
    of G + lam I per lambda) when there are at least half as many contexts as items, else
    ``_ease_dual_solver`` (one eigendecomposition of X X^T, (C, C), serves every lambda).
    """
    model = ease_model(graph, weights)
    for lam in lambdas:
        yield {"lambda": float(lam)}, model({"lambda": float(lam)})


def ease_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
    """``params -> scorer`` for any lambda: the factorisation that lambdas share is done once here."""
    x = interaction_matrix(graph, weights)
    active = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)  # (n,) items with interactions
    x = x[:, active]
    scale = float(np.mean(x.data ** 2)) if x.nnz else 1.0
    solver = (_ease_dual_solver if 2 * x.shape[0] < x.shape[1] else _ease_primal_solver)(x)
    return lambda params: _on_catalogue(solver(float(params["lambda"]) * scale), active, graph.n_items)


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


Rows = Callable[[np.ndarray], np.ndarray]


def _ease_primal_solver(x: sp.csr_matrix) -> Callable[[float], Rows]:
    """G = X^T X once; per lambda: P = (G + lam I)^-1 by LAPACK potrf + potri in float32 (potri fills
    the lower triangle only: P[i, j] = c[max(i, j), min(i, j)]). Returns ``lam -> rows``, with
    ``rows(local queries (Q,)) -> (Q, n)`` rows of B, B[i, j] = -P[i, j] / P[j, j], B[i, i] = 0, read
    from the triangle per query chunk. A ``rows`` holds its own factor only (not G), so a caller
    keeping the best one holds G, it and the system being solved."""
    gram = _gram(x, np.float32)  # (n, n)
    cols = np.arange(gram.shape[0])

    def solve(lam: float) -> Rows:
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

        return rows

    return solve


def _ease_dual_solver(x: sp.csr_matrix) -> Callable[[float], Rows]:
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

    def solve(lam: float) -> Rows:
        d = 1.0 / (np.maximum(s, 0.0) + lam)  # (C,)
        p_diag = (1.0 - w_sq @ d) / lam  # (n,)

        def rows(q, d=d.astype(np.float32), denom=(lam * p_diag).astype(np.float32)):
            b = ((w[q] * d) @ w.T) / denom  # (Q, n)
            b[np.arange(len(q)), q] = 0.0
            return b

        return rows

    return solve


def _on_catalogue(rows: Rows, active: np.ndarray, n_items: int) -> Scorer:
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
                    betas: Iterable[float] = RP3BETA_BETAS, weights: str = "raw") -> Iterator[tuple[Params, Scorer]]:
    """One RP3beta scorer per (alpha, beta), as Dacrema et al.'s RP3betaRecommender computes it.

    P_ic (N, C): item -> context, the binary item rows L1-normalised, P_ic[i, c] = 1 / deg(i);
    P_ci (C, N): context -> item, the weighted context rows L1-normalised, P_ci[c, j] = w_cj / sum_j' w_cj'
    (w treated as ``weights``, see :func:`interaction_matrix`).
    Each entry is raised to alpha after normalisation. deg(j) = number of training contexts of j.
    score(q, j) = (P_ic^alpha P_ci^alpha)[q, j] / deg(j)^beta  (0 for items without interactions).
    Rows of P3 are computed per query chunk; no top-k pruning of the similarity.
    """
    model = rp3beta_model(graph, weights)
    for alpha in alphas:
        for beta in betas:
            params = {"alpha": float(alpha), "beta": float(beta)}
            yield params, model(params)


def rp3beta_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
    """``params -> scorer`` for any (alpha, beta) (see :func:`rp3beta_scorers`): the transition matrices
    are normalised once here."""
    x = interaction_matrix(graph, weights)  # (C, N)
    binary = x.copy()
    binary.data[:] = 1.0
    degree = np.asarray(binary.sum(axis=0)).ravel()  # (N,)
    p_ic = _row_normalised(binary.T.tocsr())  # (N, C)
    p_ci = _row_normalised(x)  # (C, N)
    powered: dict[float, tuple] = {}  # the last alpha's transition powers (a grid varies beta fastest)

    def model(params: Params) -> Scorer:
        alpha, beta = float(params["alpha"]), float(params["beta"])
        if alpha not in powered:
            powered.clear()
            powered[alpha] = p_ic.power(alpha).tocsr(), p_ci.power(alpha).tocsr()
        a_ic, a_ci = powered[alpha]
        penalty = np.zeros(graph.n_items)  # (N,)
        np.power(degree, -beta, out=penalty, where=degree > 0)

        def score(q):
            return ((a_ic[np.asarray(q)] @ a_ci).toarray() * penalty).astype(np.float32)  # (Q, N)

        return score

    return model


def _row_normalised(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    return (sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ m).tocsr()


def setting_text(v) -> str:
    """A chosen setting as written in metrics.md, the report and MLflow params: numbers ``:g``, else as is."""
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)
