"""Random-walk throughput on a synthetic power-law bipartite graph.

    python bench/bench_walks.py --items 100000 --contexts 50000 --edges 2000000 --threads 2

One walk step = one item -> context -> item hop. The timed region is the whole
``visit_counts_topm`` call over every item (walking, visit counting and top-T selection); numba is
compiled and warmed on a tiny graph first so compile time is excluded. The run is repeated and both
the best and the median wall time are reported (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from anywhere: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from bench.synthetic import synthetic_graph  # noqa: E402
from pinsage.graph.walks import walk_topm  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--contexts", type=int, default=50_000)
    p.add_argument("--edges", type=int, default=2_000_000)
    p.add_argument("--alpha", type=float, default=0.8, help="Zipf exponent of node popularity")
    p.add_argument("--weighted", action="store_true", help="log-normal edge weights")
    p.add_argument("--walks-per-item", type=int, default=200)
    p.add_argument("--restart-prob", type=float, default=0.5)
    p.add_argument("--max-walk-length", type=int, default=8)
    p.add_argument("--top-t", type=int, default=50)
    p.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    numba.set_num_threads(a.threads)

    t0 = time.perf_counter()
    graph = synthetic_graph(a.items, a.contexts, a.edges, seed=a.seed, alpha=a.alpha,
                            weighted=a.weighted)
    t_graph = time.perf_counter() - t0

    walk_args = (a.top_t, a.walks_per_item, a.restart_prob, a.max_walk_length)
    t0 = time.perf_counter()
    tiny = synthetic_graph(200, 100, 1000, seed=1, weighted=a.weighted)
    walk_topm(tiny, np.arange(tiny.n_items), *walk_args, a.seed)  # compile / load the numba cache
    t_warm = time.perf_counter() - t0

    times, hops = [], 0
    for rep in range(a.repeat):
        t0 = time.perf_counter()
        visits, hops = walk_topm(graph, np.arange(graph.n_items), *walk_args, a.seed + rep)
        times.append(time.perf_counter() - t0)
    best, median = min(times), statistics.median(times)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    deg = graph.item_degree()
    filled = (visits.counts > 0).sum(axis=1)

    rows = [
        ("graph", f"{graph.n_items:,} items / {graph.n_contexts:,} contexts / "
                  f"{graph.n_edges:,} edges ({'weighted' if a.weighted else 'uniform'}, "
                  f"alpha={a.alpha}; built in {t_graph:.1f}s)"),
        ("item degree", f"max {deg.max():,}, median {np.median(deg):.0f}, "
                        f"isolated {(deg == 0).sum():,}"),
        ("walks", f"{a.walks_per_item}/item, restart {a.restart_prob}, max length "
                  f"{a.max_walk_length}, top-T {a.top_t}"),
        ("threads", f"{numba.get_num_threads()}"),
        ("total walk steps", f"{hops:,} (1 step = one item->context->item hop)"),
        ("wall time", f"best {best:.3f}s, median {median:.3f}s of {a.repeat} "
                      f"(numba warm-up {t_warm:.1f}s excluded)"),
        ("walk steps/s", f"best {hops / best / 1e6:.1f} M/s, median {hops / median / 1e6:.1f} M/s "
                         f"(incl. visit counting + top-T)"),
        ("top-T filled", f"mean {filled.mean():.1f} of {a.top_t} neighbours per item"),
        ("peak RSS", f"{peak_rss_mib:,.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
