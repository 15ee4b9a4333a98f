"""Baseline scorers, evaluated through the same full-ranking harness as PinSage.

Each returns ``score_fn(query indices (Q,)) -> (Q, N) scores`` over the whole catalogue.
EASE, RP3beta and ItemKNN have hyperparameters, all chosen on validation pairs by
:func:`tuned_baselines`: their treatment of the interaction weights (``raw``, ``log1p``, ``binary``)
and a numeric grid (EASE's lambda; RP3beta's alpha, beta; ItemKNN's shrinkage) that is extended past
an edge whenever the best point lies there (:class:`Grid`, :func:`select_on_validation`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

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
    return _itemknn_model(graph, weights)({"shrink": shrink})


def _itemknn_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
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
# with ItemKNN: their grids, the weight treatments, and the search below

EASE_LAMBDAS = (10.0, 50.0, 200.0, 500.0, 1000.0, 2000.0)  # in units of the mean squared edge weight
EASE_MAX_ITEMS = 30_000  # dense (n x n) system over the items with interactions: above it EASE is skipped
RP3BETA_ALPHAS = (0.5, 1.0)
RP3BETA_BETAS = (0.0, 0.25, 0.5, 0.75)
ITEMKNN_SHRINKS = (0.0, 10.0, 100.0)
WEIGHTS = ("raw", "log1p", "binary")  # treatments of the interaction weights, chosen on validation too
MAX_EXTENSIONS = 4  # steps past either end of an axis's initial values, at most (a best point there: cap recorded)
# An edge whose last step gained less than this (relative validation MRR) is a plateau, not an edge to
# extend: EASE's lambda and ItemKNN's shrinkage tend to a limit (co-occurrence counts) as they grow.
PLATEAU_GAIN = 0.005
VALIDATION_SAMPLE = 5_000  # grid points are scored on at most this many validation pairs (seeded subsample)

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
    model = _ease_model(graph, weights)
    for lam in lambdas:
        yield {"lambda": float(lam)}, model({"lambda": float(lam)})


def _ease_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
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
    model = _rp3beta_model(graph, weights)
    for alpha in alphas:
        for beta in betas:
            params = {"alpha": float(alpha), "beta": float(beta)}
            yield params, model(params)


def _rp3beta_model(graph: BipartiteGraph, weights: str) -> Callable[[Params], Scorer]:
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


# ---------------------------------------------------------------------------------------------
# Choosing settings on validation pairs

@dataclass(frozen=True)
class Axis:
    """One numeric hyperparameter: its initial ``values`` (increasing) and how the grid extends past
    either end: geometrically (x ``factor`` up, / ``factor`` down) when ``factor`` is given, else by
    adding or subtracting ``step``; neither: fixed. ``lower``: the bound of the parameter's domain (the
    grid never goes below it; a best point on it is recorded as ``at_bound``)."""

    name: str
    values: tuple[float, ...]
    factor: float | None = None
    step: float | None = None
    lower: float | None = None

    def ladder(self, extensions: int) -> tuple[float, ...]:
        """Every value the search may try, increasing: the initial values and at most ``extensions``
        steps past each end (fewer below where ``lower`` stops them)."""
        lo, hi = min(self.values), max(self.values)
        if self.factor:
            down = [lo / self.factor ** k for k in range(1, extensions + 1)] if lo > 0 else []
            up = [hi * self.factor ** k for k in range(1, extensions + 1)]
        elif self.step:
            down = [lo - k * self.step for k in range(1, extensions + 1)]
            up = [hi + k * self.step for k in range(1, extensions + 1)]
        else:
            down, up = [], []
        if self.lower is not None:
            down = [v for v in down if v >= self.lower]
        return tuple(sorted({float(f"{v:.6g}") for v in [*down, *self.values, *up]}))


@dataclass
class Grid:
    """A tuned baseline's search space: each weight treatment in ``weights`` builds its model once
    (``build(weights) -> (numeric params -> scorer)``: a Gram matrix, a factorisation) and is searched
    over the product of ``axes``, extended past an edge while the best point lies on it (at most
    ``max_extensions`` steps past either end of each axis's initial values: ``Axis.ladder``)."""

    build: Callable[[str], Callable[[Params], Scorer]]
    axes: tuple[Axis, ...]
    weights: tuple[str, ...] = WEIGHTS
    max_extensions: int = MAX_EXTENSIONS


def weight_treatments(graph: BipartiteGraph) -> tuple[str, ...]:
    """The treatments worth searching: all three on a weighted graph; on one whose edges all weigh
    the same they differ by a constant factor (which the grids' scale-free parameters absorb), so
    ``binary`` alone."""
    w = graph.item_weights
    return WEIGHTS if len(w) and w.min() != w.max() else ("binary",)


def ease_grid(graph: BipartiteGraph, lambdas: Iterable[float] = EASE_LAMBDAS) -> Grid:
    return Grid(lambda w: _ease_model(graph, w), (Axis("lambda", tuple(lambdas), factor=4.0),),
                weight_treatments(graph))


def rp3beta_grid(graph: BipartiteGraph) -> Grid:
    # beta extends by steps (it starts at 0); below 0 it favours popular items, which is allowed
    return Grid(lambda w: _rp3beta_model(graph, w),
                (Axis("alpha", RP3BETA_ALPHAS, factor=2.0), Axis("beta", RP3BETA_BETAS, step=0.25)),
                weight_treatments(graph))


def itemknn_grid(graph: BipartiteGraph) -> Grid:
    return Grid(lambda w: _itemknn_model(graph, w), (Axis("shrink", ITEMKNN_SHRINKS, factor=10.0, lower=0.0),),
                weight_treatments(graph))


@dataclass
class Selection:
    """The grid point with the best validation MRR (first one on ties), its scorer, and the grid's
    validation MRRs: ``grid`` = [{**params, "validation_mrr": ...}, ...] in evaluation order.

    ``n_pairs`` of ``n_pairs_total`` validation pairs scored each point; for a :class:`Grid`,
    ``cap_hit``: axis -> "lower" / "upper" where the chosen point is still on that edge after the most
    extensions allowed (the search stopped there, not at an interior optimum), ``at_bound``: axis ->
    value where it is on the parameter's domain bound."""

    params: Params
    scorer: Scorer
    grid: list[dict]
    n_pairs: int = 0
    n_pairs_total: int = 0
    cap_hit: dict = field(default_factory=dict)
    at_bound: dict = field(default_factory=dict)
    plateau: dict = field(default_factory=dict)  # axis -> edge where the curve flattened (PLATEAU_GAIN)

    def record(self) -> dict:
        """What metrics.json keeps of the selection."""
        return {"grid": self.grid, "validation_pairs": self.n_pairs, "of_validation_pairs": self.n_pairs_total,
                "cap_hit": self.cap_hit, "at_bound": self.at_bound, "plateau": self.plateau}


def validation_subsample(queries: np.ndarray, targets: np.ndarray, max_pairs: int | None = VALIDATION_SAMPLE,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_pairs`` of the pairs, a seeded random subset in their original order (all when
    there are no more, or ``max_pairs`` is None)."""
    if max_pairs is None or len(queries) <= max_pairs:
        return queries, targets
    keep = np.sort(np.random.default_rng(seed).choice(len(queries), max_pairs, replace=False))
    return queries[keep], targets[keep]


def select_on_validation(candidates: Union[Grid, Iterable[tuple[Params, Scorer]]], queries: np.ndarray,
                         targets: np.ndarray, max_pairs: int | None = None, seed: int = 0) -> Selection:
    """Evaluate every grid point on the validation pairs only and keep the best by MRR.

    ``candidates``: (params, scorer) pairs, or a :class:`Grid` (searched per weight treatment, extended
    past edges, see :class:`Grid`). ``max_pairs``: score on a seeded subsample of at most that many
    validation pairs (:func:`validation_subsample`). Scorers are built and consumed one at a time, so at
    most two (the best so far and the current) are alive.
    """
    n_total = len(queries)
    queries, targets = validation_subsample(np.asarray(queries), np.asarray(targets), max_pairs, seed)
    evaluate = lambda scorer: metrics_from_ranks(evaluate_scorer(scorer, queries, targets))["mrr"]  # noqa: E731
    if isinstance(candidates, Grid):
        chosen = _search(candidates, evaluate)
    else:
        best, grid = None, []
        for params, scorer in candidates:
            mrr = evaluate(scorer)
            grid.append({**params, "validation_mrr": mrr})
            if best is None or mrr > best[2]:
                best = (params, scorer, mrr)
            del scorer  # before the generator builds the next one (the loop would still hold this one)
        if best is None:
            raise ValueError("empty hyperparameter grid")
        chosen = Selection(best[0], best[1], grid)
    chosen.n_pairs, chosen.n_pairs_total = len(queries), n_total
    return chosen


def _search(grid: Grid, evaluate: Callable[[Scorer], float]) -> Selection:
    """Per weight treatment: the product of the axes' values, then, while the best point of that
    treatment is the lowest or highest value evaluated along an axis (the other axes fixed at the
    best's), the next value of that axis's ladder past it (``Axis.ladder``: at most
    ``grid.max_extensions`` steps past either end of the initial values). A best point still on the
    end of a ladder is recorded: ``cap_hit`` (the extension cap stopped the search) or ``at_bound``
    (the parameter's domain bound); an extension that gained less than ``PLATEAU_GAIN`` over the
    point before it ends that direction as ``plateau`` (the curve has reached its limit). The best
    over every treatment wins (first on ties: treatments in ``grid.weights`` order). Only the overall
    best scorer is kept: at most it, the one being scored and one treatment's model (its Gram matrix or
    factorisation) are alive."""
    names = [a.name for a in grid.axes]
    ladders = [a.ladder(grid.max_extensions) for a in grid.axes]
    records: list[dict] = []
    overall = None  # [mrr, params, scorer, cap_hit, at_bound, plateau]
    for weights in grid.weights:
        model = grid.build(weights)
        seen: dict[tuple, float] = {}  # point -> validation MRR, this treatment
        best: list = []  # [mrr, point] of this treatment

        def run(point: tuple) -> None:
            nonlocal overall
            params = {**dict(zip(names, point)), "weights": weights}
            scorer = model(params)
            mrr = evaluate(scorer)
            seen[point] = mrr
            records.append({**params, "validation_mrr": mrr})
            if not best or mrr > best[0]:
                best[:] = [mrr, point]
            if overall is None or mrr > overall[0]:
                overall = [mrr, params, scorer, {}, {}, {}]
            del scorer

        for point in itertools.product(*(a.values for a in grid.axes)):
            point = tuple(float(f"{v:.6g}") for v in point)
            if point not in seen:
                run(point)
        while True:
            todo, cap_hit, at_bound, plateau = None, {}, {}, {}
            point = best[1]
            for k, axis in enumerate(grid.axes):
                line = sorted(p[k] for p in seen if all(p[j] == point[j] for j in range(len(names)) if j != k))
                at = ladders[k].index(point[k])
                for d, edge in ((-1, line[0]), (1, line[-1])):
                    if point[k] != edge or not (axis.factor or axis.step):
                        continue
                    if len(line) > 1 and point[k] not in axis.values:  # an extension that gained next to nothing
                        inner = point[:k] + (line[1] if d < 0 else line[-2],) + point[k + 1:]
                        if seen[point] - seen[inner] < PLATEAU_GAIN * abs(seen[inner]):
                            plateau[axis.name] = "lower" if d < 0 else "upper"
                            continue
                    if 0 <= at + d < len(ladders[k]):
                        todo = point[:k] + (ladders[k][at + d],) + point[k + 1:]
                        break
                    if d < 0 and axis.lower is not None and point[k] <= axis.lower:
                        at_bound[axis.name] = point[k]
                    else:
                        cap_hit[axis.name] = "lower" if d < 0 else "upper"
                if todo:
                    break
            if todo is None:
                break
            run(todo)
        if overall[1]["weights"] == weights:  # the overall best is this treatment's: its edges
            overall[3], overall[4], overall[5] = cap_hit, at_bound, plateau
        del model, run
    if overall is None:
        raise ValueError("empty hyperparameter grid")
    return Selection(overall[1], overall[2], records, cap_hit=overall[3], at_bound=overall[4], plateau=overall[5])


@dataclass
class TunedBaselines:
    """EASE, RP3beta and ItemKNN at their validation-chosen settings (see ``select_on_validation``).

    ``scorers``: method -> scorer; ``hyperparameters``: method -> chosen params (numeric ones, then
    ``weights``); ``selection``: method -> ``Selection.record()`` (every grid point with its validation
    MRR, the pairs it was scored on, where the extension cap or a domain bound stopped the search);
    ``skipped``: method -> why it did not run.
    """

    scorers: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def tuned_baselines(g: BipartiteGraph, valid_queries: np.ndarray, valid_targets: np.ndarray,
                    ease_max_items: int, max_pairs: int | None = VALIDATION_SAMPLE) -> TunedBaselines:
    """Choose EASE's lambda, RP3beta's (alpha, beta), ItemKNN's shrinkage and each one's weight
    treatment on the validation pairs (they never see test): every point on the same seeded subsample
    of at most ``max_pairs`` validation pairs. EASE is skipped above ``ease_max_items`` items with
    interactions."""
    out = TunedBaselines()
    grids = {"rp3beta": rp3beta_grid, "itemknn": itemknn_grid}
    reason = ease_skip_reason(g, ease_max_items)
    if reason is None:
        grids = {"ease": ease_grid, **grids}
    else:
        out.skipped["ease"] = reason
    for name, grid in grids.items():
        chosen = select_on_validation(grid(g), valid_queries, valid_targets, max_pairs=max_pairs)
        out.scorers[name], out.hyperparameters[name] = chosen.scorer, chosen.params
        out.selection[name] = chosen.record()
        del chosen
    return out


def setting_text(v) -> str:
    """A chosen setting as written in metrics.md, the report and MLflow params: numbers ``:g``, else as is."""
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def settings_note(tuned: TunedBaselines) -> str:
    """Markdown lines under the metrics tables: the chosen settings and what was skipped."""
    lines = []
    for name, params in tuned.hyperparameters.items():
        sel = tuned.selection[name]
        n, total = sel["validation_pairs"], sel["of_validation_pairs"]
        pairs = f"{n:,} validation pairs" if n == total else f"a seeded {n:,} of the {total:,} validation pairs"
        notes = [f"{axis} at the {edge} edge after {MAX_EXTENSIONS} extensions (cap)"
                 for axis, edge in sel["cap_hit"].items()]
        notes += [f"{axis} at its domain bound {v:g}" for axis, v in sel["at_bound"].items()]
        notes += [f"{axis} on a plateau at the {edge} edge (last step gained < {PLATEAU_GAIN:.1%})"
                  for axis, edge in sel.get("plateau", {}).items()]
        lines.append(f"- {name}: " + ", ".join(f"{k} {setting_text(v)}" for k, v in params.items())
                     + f" (best validation MRR of {len(sel['grid'])} settings on {pairs}"
                     + "".join(f"; {n}" for n in notes) + ")")
    lines += [f"- {name}: skipped, {why}" for name, why in tuned.skipped.items()]
    return "\n".join(lines) + "\n" if lines else ""
