"""Neighbourhood stage at 10^5, 10^6 and 10^7 edges, engine ``local`` and ``ray``: cost against size.

    python bench/bench_neighbors_scale.py                       # both engines, 1e5 1e6 1e7 edges
    python bench/bench_neighbors_scale.py --edges 1e5 1e6 --engines local

Graphs come from the seeded power-law generator (``bench/synthetic.py``) with 20 edges per item and
40 per context. Each row times the whole stage over every item (walks, visit counting, top-T) after a
warm-up on a tiny graph (numba compile and Ray worker start excluded), and prints walk steps/s,
seconds per million edges (flat when cost grows linearly in edges) and memory:
``local``: the process's peak RSS. ``ray``: a local Ray with ``--cpus`` workers; the walk tables are
put in the object store once; per worker, the largest private (unshared) memory and peak RSS. A
worker's private memory staying far below the graph's size is the evidence that no task copies it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import synthetic_graph  # noqa: E402
from pinsage.graph.walks import WalkConfig, random_walk_neighbors, walk_topm  # noqa: E402

MIB = 1024 * 1024


def _local(graph, cfg: WalkConfig) -> dict:
    t0 = time.perf_counter()
    random_walk_neighbors(graph, cfg)
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "memory": f"peak RSS {peak_mib:,.0f} MiB"}


def _ray(graph, cfg: WalkConfig) -> dict:
    from pinsage.engines.ray_walks import random_walk_neighbors_ray

    stats: dict = {}
    t0 = time.perf_counter()
    random_walk_neighbors_ray(graph, cfg, stats=stats)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds,
            "memory": (f"graph {stats['graph_bytes'] / MIB:,.0f} MiB shared; per worker private "
                       f"{stats['worker_private_bytes'] / MIB:,.0f} MiB, peak RSS "
                       f"{stats['worker_peak_rss_bytes'] / MIB:,.0f} MiB; {stats['n_shards']} tasks on "
                       f"{stats['n_workers']} workers; zero-copy {stats['zero_copy']}")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--edges", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    p.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    p.add_argument("--walks-per-item", type=int, default=200)
    p.add_argument("--top-t", type=int, default=50)
    p.add_argument("--cpus", type=int, default=2, help="Ray workers of the local cluster")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cfg = WalkConfig(walks_per_item=a.walks_per_item, top_t=a.top_t, seed=a.seed)
    tiny = synthetic_graph(200, 100, 2000, seed=1)
    graphs = []
    for e in a.edges:
        e = int(e)
        t0 = time.perf_counter()
        graphs.append((synthetic_graph(e // 20, e // 40, e, seed=a.seed), time.perf_counter() - t0))
    runners = {"local": _local, "ray": _ray}
    print("| engine | edges | items | walk steps | seconds | M steps/s | s per M edges | memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for engine in a.engines:
        ctx = None
        if engine == "ray":
            from pinsage.engines.ray_session import ray_session

            ctx = ray_session(num_cpus=a.cpus)
            ctx.__enter__()
        try:
            runners[engine](tiny, cfg)  # warm-up: numba compile, Ray workers started
            for graph, _ in graphs:
                # identical walks on both engines (per-source seeding): count the steps once, untimed
                _, hops = walk_topm(graph, np.arange(graph.n_items), cfg.top_t, cfg.walks_per_item,
                                     cfg.restart_prob, cfg.max_walk_length, cfg.seed)
                r = runners[engine](graph, cfg)
                print(f"| {engine} | {graph.n_edges:,} | {graph.n_items:,} | {hops:,} | {r['seconds']:.2f} | "
                      f"{hops / r['seconds'] / 1e6:.1f} | {r['seconds'] / (graph.n_edges / 1e6):.2f} | "
                      f"{r['memory']} |", flush=True)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)


if __name__ == "__main__":
    main()
