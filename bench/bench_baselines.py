"""Time and peak memory of the tuned baselines (EASE, RP3beta, ItemKNN) with their validation grids.

    python bench/bench_baselines.py                      # ml-latest-small + synthetic 10k items
    python bench/bench_baselines.py --eigh               # + one eigendecomposition of G, for comparison

What is timed per method is what ``pipeline.evaluate`` adds: the grid (every weight treatment, extended
past an edge where the best point lies) scored on at most ``tuning.VALIDATION_SAMPLE`` validation pairs
(``select_on_validation``), then the chosen setting ranked on the test and validation pairs.
Peak memory is the tracemalloc peak of that region (numpy and scipy buffers; LAPACK's own small
workspace is not counted); the process's max RSS is printed at the end.

Data sets:
- ml-latest-small, the pipeline's own split (default ``last-item`` protocol) of ``--data``.
- synthetic power-law graphs (``bench.synthetic``) with 10,000 items and 600,000 distinct
  interactions, once with 50,000 contexts (EASE's Cholesky route, G factorised per lambda) and once
  with 4,000 contexts (its Woodbury route: fewer than half as many contexts as items). Their
  ``--pairs`` validation and test pairs are random (query, target) couples of items sharing a
  context, drawn with a fixed seed: only the cost matters there, the MRR is not a result.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from anywhere: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import synthetic_graph  # noqa: E402
from pinsage import pipeline  # noqa: E402
from pinsage.eval import baselines, tuning  # noqa: E402
from pinsage.eval.metrics import evaluate_scorer, metrics_from_ranks  # noqa: E402
from pinsage.graph.bipartite import BipartiteGraph  # noqa: E402
from pinsage.run.layout import RunDir  # noqa: E402

GRIDS = {"ease": tuning.ease_grid, "rp3beta": tuning.rp3beta_grid, "itemknn": tuning.itemknn_grid}


def movielens(data: str) -> tuple[BipartiteGraph, tuple, tuple]:
    """The pipeline's graph and validation / test pairs of ``data`` (prepare + graph stages)."""
    out = tempfile.mkdtemp(prefix="bench_baselines_")
    cfg = pipeline.PipelineConfig(data=data, out=out)
    pipeline.prepare(cfg, log=lambda s: None)
    pipeline.graph(cfg, log=lambda s: None)
    g = BipartiteGraph.load(RunDir(out).graph_file)
    run = RunDir(out)
    return g, run.pairs("valid"), run.pairs("test")


def random_pairs(g: BipartiteGraph, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) queries and targets: two distinct items of one random context with at least two items."""
    rng = np.random.default_rng(seed)
    deg = g.context_degree()
    ctx = rng.choice(np.flatnonzero(deg >= 2), n)
    first = rng.integers(0, deg[ctx])
    second = (first + rng.integers(1, deg[ctx])) % deg[ctx]
    start = g.context_indptr[ctx]
    return g.context_items[start + first].astype(np.int64), g.context_items[start + second].astype(np.int64)


def bench_method(name: str, g: BipartiteGraph, valid: tuple, test: tuple) -> str:
    tracemalloc.start()
    t0 = time.perf_counter()
    chosen = tuning.select_on_validation(GRIDS[name](g), *valid, max_pairs=tuning.VALIDATION_SAMPLE)
    t_grid = time.perf_counter() - t0
    test_mrr = metrics_from_ranks(evaluate_scorer(chosen.scorer, *test))["mrr"]
    evaluate_scorer(chosen.scorer, *valid)  # what evaluate does again for the validation row
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.params.items())
    if chosen.cap_hit:
        params += f" (extension cap hit: {chosen.cap_hit})"
    return (f"  {name:8s} {len(chosen.grid)} settings: {wall:6.1f}s ({t_grid:.1f}s grid on validation), "
            f"peak {peak / 2**20:7.0f} MiB; chosen {params}, test MRR {test_mrr:.4f}")


def report(label: str, g: BipartiteGraph, valid: tuple, test: tuple) -> None:
    n_active = int((g.item_degree() > 0).sum())
    route = "Woodbury (X X^T)" if 2 * g.n_contexts < n_active else "Cholesky of G per lambda"  # ease_scorers' rule
    print(f"{label}: {g.n_items} items ({n_active} with interactions), {g.n_contexts} contexts, "
          f"{g.n_edges} interactions, {len(valid[0])} validation / {len(test[0])} test pairs; EASE route: {route}")
    for name in GRIDS:
        print(bench_method(name, g, valid, test), flush=True)


def eigh_comparison(g: BipartiteGraph) -> None:
    """One float32 eigendecomposition of G (would serve every lambda) vs one potrf + potri."""
    import scipy.linalg as sla

    x = baselines.interaction_matrix(g)
    x = x[:, np.flatnonzero(np.diff(x.tocsc().indptr) > 0)]
    gram = (x.T @ x).toarray().astype(np.float32)
    t0 = time.perf_counter()
    sla.eigh(gram, driver="evr", check_finite=False)
    t_eig = time.perf_counter() - t0
    t0 = time.perf_counter()
    baselines._ease_primal_solver(x)(500.0)  # G, then one potrf + potri
    t_chol = time.perf_counter() - t0
    print(f"  G of {gram.shape[0]} items: one eigh {t_eig:.1f}s vs one lambda by Cholesky (incl. G) {t_chol:.1f}s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="data/ml-latest-small")
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--edges", type=int, default=600_000)
    p.add_argument("--pairs", type=int, default=5_000, help="validation and test pairs of the synthetic graphs")
    p.add_argument("--eigh", action="store_true", help="also time one eigendecomposition of G (10k items)")
    a = p.parse_args(argv)

    report("ml-latest-small", *movielens(a.data))
    for n_contexts in (50_000, 4_000):
        g = synthetic_graph(a.items, n_contexts, a.edges, seed=0)
        report(f"synthetic ({n_contexts} contexts)", g, random_pairs(g, a.pairs, 1), random_pairs(g, a.pairs, 2))
        if a.eigh and 2 * n_contexts >= a.items:
            eigh_comparison(g)
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
