"""The ``ray`` engine: heavy stages sharded over a Ray cluster, same outputs as the ``local`` engine.

Neighbourhoods (paper Sec. 3.1 at scale): the walk tables of the graph (CSR arrays and, for weighted
graphs, the alias tables; :func:`pinsage.graph.walks.walk_tables`) are put into Ray's object store ONCE.
Every task receives the same object reference; Ray maps numpy arrays out of the shared-memory store
without copying, so a worker's memory holds one read-only view of the graph, whatever the number
of tasks it runs, plus its own shard of the output. Query items are cut into contiguous shards, one
task each; every source's random stream depends only on (seed, source), so the concatenated shards
equal the single-process table exactly, for any shard count and any cluster.

Ray is imported only when this engine is used; ``pinsage`` itself never needs it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import ray

from pinsage.engines.ray_session import process_memory, shard_bounds
from pinsage.graph.bipartite import BipartiteGraph
from pinsage.graph.neighbors import Neighbors, VisitTable
from pinsage.graph.walks import WalkConfig, random_walk_neighbors, visit_counts_topm, walk_tables


def _walk_shard(tables: dict, sources: np.ndarray, m: int, config: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One task: the top-m visit table of ``sources``, with whether the graph arrived zero-copy and
    the worker's memory after the walks."""
    visits = visit_counts_topm(tables, sources, m, config["walks_per_item"], config["restart_prob"],
                               config["max_walk_length"], config["seed"])
    info = {"zero_copy": not tables["item_contexts"].flags.writeable,  # a view of the object store
            "pid": os.getpid(), **process_memory()}
    return visits.items, visits.counts, info


def visit_counts_ray(graph: BipartiteGraph, m: int, config: WalkConfig, n_shards: int | None = None,
                     stats: dict | None = None) -> VisitTable:
    """:func:`pinsage.graph.walks.visit_counts_topm` over every item, sharded into Ray tasks.

    Args:
        n_shards: tasks to cut the items into; default ~4 per cluster CPU (load balance against
            stragglers) with at least 10,000 items per task (task overhead).
        stats: if given, receives ``n_shards``, ``zero_copy`` (True when every task read the graph
            from the object store without copying it), ``graph_bytes`` (size of the walk tables) and
            ``worker_private_bytes`` / ``worker_peak_rss_bytes`` (the largest over tasks).
    """

    n = graph.n_items
    if n_shards is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_shards = max(1, min(4 * cpus, math.ceil(n / 10_000)))
    tables = walk_tables(graph)
    tables_ref = ray.put(tables)  # once: every task reads the same shared arrays
    remote = ray.remote(_walk_shard).options(num_cpus=1)
    walk_cfg = {"walks_per_item": config.walks_per_item, "restart_prob": config.restart_prob,
                "max_walk_length": config.max_walk_length, "seed": config.seed}
    bounds = shard_bounds(n, n_shards)
    futures = [remote.remote(tables_ref, np.arange(a, b, dtype=np.int64), m, walk_cfg) for a, b in bounds]
    parts = ray.get(futures)
    items = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, m), dtype=np.int32)
    counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, m), dtype=np.int32)
    if stats is not None:
        infos = [p[2] for p in parts]
        stats.update(n_shards=len(bounds), zero_copy=all(i["zero_copy"] for i in infos),
                     graph_bytes=int(sum(a.nbytes for a in tables.values())),
                     n_workers=len({i["pid"] for i in infos}),
                     worker_private_bytes=max((i.get("private", 0) for i in infos), default=0),
                     worker_peak_rss_bytes=max((i.get("peak_rss", 0) for i in infos), default=0))
    return VisitTable(items, counts)


def random_walk_neighbors_ray(graph: BipartiteGraph, config: WalkConfig, hard_negative_depth: int = 0,
                              n_shards: int | None = None, stats: dict | None = None
                              ) -> tuple[Neighbors, VisitTable]:
    """Same contract and output as :func:`pinsage.graph.walks.random_walk_neighbors`, on the Ray cluster
    the caller is connected to (see :func:`ray_session`)."""
    return random_walk_neighbors(
        graph, config, hard_negative_depth,
        count_visits=lambda g, m, cfg: visit_counts_ray(g, m, cfg, n_shards=n_shards, stats=stats))
