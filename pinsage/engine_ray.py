"""The ``ray`` engine: heavy stages sharded over a Ray cluster, same outputs as the ``local`` engine.

Neighbourhoods (paper Sec. 3.1 at scale): the walk tables of the graph (CSR arrays and, for weighted
graphs, the alias tables; :func:`pinsage.walks.walk_tables`) are put into Ray's object store ONCE.
Every task receives the same object reference; Ray maps numpy arrays out of the shared-memory store
without copying, so a worker's memory holds one read-only view of the graph, whatever the number
of tasks it runs, plus its own shard of the output. Query items are cut into contiguous shards, one
task each; every source's random stream depends only on (seed, source), so the concatenated shards
equal the single-process table exactly, for any shard count and any cluster.

Ray is imported only when this engine is used; ``pinsage`` itself never needs it.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import numpy as np

from .graph import BipartiteGraph
from .walks import (Neighbors, VisitTable, WalkConfig, neighbors_from_visits, rerank_by_degree,
                    visit_counts_topm, walk_tables)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (e.g. ``ray://head:10001`` or ``auto``), or start a local
    one when ``address`` is empty; a session this call started is shut down on exit."""
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _walk_shard(tables: dict, sources: np.ndarray, m: int, config: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """One task: the top-m visit table of ``sources``; also says whether the graph arrived zero-copy."""
    visits = visit_counts_topm(tables, sources, m, config["walks_per_item"], config["restart_prob"],
                               config["max_walk_length"], config["seed"])
    shared = not tables["item_contexts"].flags.writeable  # a view of the object store, not a copy
    return visits.items, visits.counts, shared


def shard_bounds(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering range(n) in ``n_shards`` near-equal pieces."""
    n_shards = max(1, min(n_shards, n)) if n else 1
    edges = np.linspace(0, n, n_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def visit_counts_ray(graph: BipartiteGraph, m: int, config: WalkConfig, n_shards: int | None = None,
                     stats: dict | None = None) -> VisitTable:
    """:func:`pinsage.walks.visit_counts_topm` over every item, sharded into Ray tasks.

    Args:
        n_shards: tasks to cut the items into; default ~4 per cluster CPU (load balance against
            stragglers) with at least 10,000 items per task (task overhead).
        stats: if given, receives ``n_shards`` and ``zero_copy`` (True when every task read the
            graph from the object store without copying it).
    """
    import ray

    n = graph.n_items
    if n_shards is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_shards = max(1, min(4 * cpus, math.ceil(n / 10_000)))
    tables_ref = ray.put(walk_tables(graph))  # once: every task reads the same shared arrays
    remote = ray.remote(_walk_shard).options(num_cpus=1)
    walk_cfg = {"walks_per_item": config.walks_per_item, "restart_prob": config.restart_prob,
                "max_walk_length": config.max_walk_length, "seed": config.seed}
    bounds = shard_bounds(n, n_shards)
    futures = [remote.remote(tables_ref, np.arange(a, b, dtype=np.int64), m, walk_cfg) for a, b in bounds]
    parts = ray.get(futures)
    items = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, m), dtype=np.int32)
    counts = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, m), dtype=np.int32)
    if stats is not None:
        stats.update(n_shards=len(bounds), zero_copy=all(p[2] for p in parts))
    return VisitTable(items, counts)


def random_walk_neighbors_ray(graph: BipartiteGraph, config: WalkConfig, hard_negative_depth: int = 0,
                              n_shards: int | None = None, stats: dict | None = None
                              ) -> tuple[Neighbors, VisitTable]:
    """Same contract and output as :func:`pinsage.walks.random_walk_neighbors`, on the Ray cluster
    the caller is connected to (see :func:`ray_session`)."""
    m = max(config.top_t, hard_negative_depth)
    visits = visit_counts_ray(graph, m, config, n_shards=n_shards, stats=stats)
    ranked = rerank_by_degree(visits, graph.item_degree(), config.degree_penalty)
    return neighbors_from_visits(ranked, config.top_t), visits
