"""Random walks with restart on the item <-> context graph: importance-based neighbourhoods.

PinSage (Ying et al., KDD 2018, Sec. 3.1 "Importance-based neighborhoods") defines the neighbourhood
of an item as the T items with the highest visit counts of short random walks started from it, and
uses the L1-normalised counts as the weights of the importance pooling. The same visit ranking,
read deeper (ranks ~ 2000-5000 in the paper), supplies the curriculum "hard negatives" (Sec. 3.6),
and dense visit counts are the Pixie baseline.

A *walk* is a sequence of hops ``item -> context -> item``. Every walk starts at the source item;
after each hop the walk ends ("restarts at the source") with probability ``restart_prob``, and it is
cut after ``max_walk_length`` hops. Each source runs ``walks_per_item`` walks and every item landed
on is counted, the source itself excluded. Next edges are drawn uniformly when all graph weights are
equal and proportionally to the edge weight otherwise (both directions).

Determinism: the random stream of a source depends only on ``(seed, item index of the source)``
(splitmix64), so results do not depend on the thread count, the scheduling, the block layout or on
which other sources are in the same call: row k of ``visit_counts_topm(g, sources, ...)`` equals row
``sources[k]`` of the same call over all items.

Ties: visit counts are small integers (with 200 walks per item the rank-T count is typically 2 or 3
and shared by many items), so the order among items of equal count decides a large part of every
neighbourhood. It is pseudo-random and seeded, never the item index (that would hand every tie to the
catalogue's lowest ids): each source ranks its items by ``(count, tie_key)`` where
``tie_key = pi_{seed,source}(item)`` is a keyed bijection of the 31-bit item index (:func:`tie_keys`).
Being a bijection, the key both orders the tie and gives back the item; being a function of
``(seed, source, item)`` only, it keeps the determinism above.

The numba kernels (hashing, alias tables, the walks, the top-m selection) are in
:mod:`pinsage.graph.walk_kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pinsage.graph.bipartite import BipartiteGraph
from pinsage.graph.neighbors import Neighbors, VisitTable, neighbors_from_visits
from pinsage.graph.walk_kernels import alias_table, dense_kernel, tie_keys_kernel, topm_kernel
from pinsage.util.progress import Progress


@dataclass
class WalkConfig:
    walks_per_item: int = 200  # ~400 hops per item: enough repeat visits for a stable top-T ranking
    restart_prob: float = 0.5  # mean walk ~2 hops: neighbourhoods stay local (1-3 hops dominate)
    max_walk_length: int = 8  # hard cap; with restart 0.5 only 2^-7 < 1% of walks reach it
    top_t: int = 20  # T: neighbours kept per item (paper: T=50 best, Table 4); 20 trains cheaper
    seed: int = 0  # walks are a pure function of (graph, config): re-runs give identical tables


def tie_keys(seed: int, sources, items) -> np.ndarray:
    """(len(sources), len(items)) int64 tie keys in [0, 2^31): the seeded tie-break of the walks.

    Row r ranks ``items`` for source ``sources[r]``: among items of equal visit count (or score) the
    larger key comes first. A pseudo-random bijection of the item index, keyed by (seed, source):
    distinct items get distinct keys, and the order is unrelated to the index and differs between
    sources and seeds. The kernels use exactly these keys; reference rankings and other top-T
    selections (cold-start content neighbourhoods) use them to break ties the same way.
    """
    sources = np.ascontiguousarray(sources, dtype=np.int64).reshape(-1)
    items = np.ascontiguousarray(items, dtype=np.int64).reshape(-1)
    if len(items) and (items.min() < 0 or items.max() > 0x7FFFFFFF):
        raise ValueError("items must be in [0, 2^31)")
    out = np.empty((len(sources), len(items)), dtype=np.int64)
    tie_keys_kernel(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF), sources, items, out)
    return out


def walk_tables(graph: BipartiteGraph) -> dict[str, np.ndarray]:
    """The arrays every walk reads: the CSR structure in fixed dtypes and, for weighted graphs, the
    per-row alias tables. Built once per graph; the Ray engine ships them to the object store once."""
    iw, cw = graph.item_weights, graph.context_weights
    weighted = bool(len(iw) and (iw.min() != iw.max() or cw.min() != cw.max()))
    if weighted and (iw.min() <= 0 or cw.min() <= 0):
        raise ValueError("edge weights must be positive")
    tables = {"n": np.array([graph.n_items, graph.n_contexts], dtype=np.int64),
              "item_indptr": np.ascontiguousarray(graph.item_indptr, dtype=np.int64),
              "item_contexts": np.ascontiguousarray(graph.item_contexts, dtype=np.int32),
              "context_indptr": np.ascontiguousarray(graph.context_indptr, dtype=np.int64),
              "context_items": np.ascontiguousarray(graph.context_items, dtype=np.int32),
              "weighted": np.array([weighted])}
    if weighted:
        tables["item_alias"] = alias_table(tables["item_indptr"], np.ascontiguousarray(iw, dtype=np.float32))
        tables["context_alias"] = alias_table(tables["context_indptr"], np.ascontiguousarray(cw, dtype=np.float32))
    else:  # unused by the uniform path
        tables["item_alias"] = tables["context_alias"] = np.zeros(1, dtype=np.uint64)
    return tables


def _prepare(graph: BipartiteGraph | dict, sources, walks_per_item: int, restart_prob: float,
             max_walk_length: int, seed: int):
    """Validate arguments and return the fixed-dtype arguments shared by both kernels.

    ``graph`` is a :class:`BipartiteGraph` or the :func:`walk_tables` of one (read as they are: no copy).
    """
    if walks_per_item < 0:
        raise ValueError(f"walks_per_item must be >= 0, got {walks_per_item}")
    if not 0.0 <= restart_prob <= 1.0:
        raise ValueError(f"restart_prob must be in [0, 1], got {restart_prob}")
    if max_walk_length < 1:
        raise ValueError(f"max_walk_length must be >= 1, got {max_walk_length}")
    t = walk_tables(graph) if isinstance(graph, BipartiteGraph) else graph
    n_items = int(t["n"][0])
    if n_items >= 2**31 - 1:
        raise ValueError("n_items must fit in int32")
    sources = np.ascontiguousarray(sources, dtype=np.int64).reshape(-1)
    if len(sources) and (sources.min() < 0 or sources.max() >= n_items):
        raise ValueError(f"source index out of range [0, {n_items})")
    n_threads = numba.get_num_threads()
    n_blocks = max(1, min(len(sources), 4 * n_threads))
    # distinct items one source can touch (every hop a new item), +1 for the branch-free append
    touched_cap = min(n_items, walks_per_item * max_walk_length) + 1
    restart_thresh = np.int64(round(restart_prob * 2.0**32))  # restart iff u32 < thresh
    seed_u64 = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    graph_args = (t["item_indptr"], t["item_contexts"], t["item_alias"],
                  t["context_indptr"], t["context_items"], t["context_alias"],
                  bool(t["weighted"][0]), np.int64(walks_per_item), restart_thresh, np.int64(max_walk_length),
                  seed_u64, np.int64(n_items), np.int64(n_blocks), np.int64(touched_cap))
    return sources, graph_args


def walk_topm(graph: BipartiteGraph, sources: np.ndarray, m: int, walks_per_item: int,
              restart_prob: float, max_walk_length: int, seed: int) -> tuple[VisitTable, int]:
    """``visit_counts_topm`` plus the total number of hops walked (for benchmarks)."""
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    sources, args = _prepare(graph, sources, walks_per_item, restart_prob, max_walk_length, seed)
    items = np.empty((len(sources), m), dtype=np.int32)
    counts = np.empty((len(sources), m), dtype=np.int32)
    n_blocks = int(args[-2])
    block_hops = np.zeros(n_blocks, dtype=np.int64)
    if len(sources):
        with numba.parallel_chunksize(1):  # threads take blocks dynamically: noisy cores balance
            topm_kernel(sources, np.int64(m), *args, items, counts, block_hops)
    return VisitTable(items, counts), int(block_hops.sum())


def visit_counts_topm(graph: BipartiteGraph, sources: np.ndarray, m: int, walks_per_item: int,
                      restart_prob: float, max_walk_length: int, seed: int) -> VisitTable:
    """Random walks with restart from each source item over item->context->item hops.

    Counts visits of every item reached (the source itself excluded) and keeps the top-m items by
    visit count, ties broken at random: by the larger :func:`tie_keys` of (seed, source, item), never
    by item index. Deterministic for a seed, independent of thread
    count and scheduling: each source's RNG and tie keys are seeded from (seed, source item index).

    Returns:
        VisitTable with (len(sources), m) int32 ``items`` (-1 padded) and ``counts`` (0 padded).
    """
    return walk_topm(graph, sources, m, walks_per_item, restart_prob, max_walk_length, seed)[0]


def dense_visit_counts(graph: BipartiteGraph, sources: np.ndarray, walks_per_item: int,
                       restart_prob: float, max_walk_length: int, seed: int) -> np.ndarray:
    """(len(sources), n_items) float32 visit counts, the source's own entry 0 (Pixie baseline).

    Same walks as :func:`visit_counts_topm` for the same arguments, so the counts agree exactly.
    Meant for a few hundred query items: the output is dense.
    """
    sources, args = _prepare(graph, sources, walks_per_item, restart_prob, max_walk_length, seed)
    out = np.zeros((len(sources), int(args[11])), dtype=np.float32)
    if len(sources):
        with numba.parallel_chunksize(1):
            dense_kernel(sources, *args, out)
    return out


def walk_visits(graph: BipartiteGraph | dict, sources: np.ndarray, m: int, config: WalkConfig,
                label: str = "neighbors: walks") -> VisitTable:
    """``visit_counts_topm`` over ``sources`` in ~20 slices, with a progress bar.

    Each source's walks depend only on (seed, source), so the slices give exactly the table of one
    call; the walk tables (alias tables of weighted graphs) are built once and shared by all slices.
    """
    tables = walk_tables(graph) if isinstance(graph, BipartiteGraph) else graph
    sources = np.asarray(sources, dtype=np.int64)
    step = max(4096, -(-len(sources) // 20))
    parts = []
    with Progress(label, len(sources), "items") as bar:
        for s in range(0, len(sources), step):
            chunk = sources[s:s + step]
            parts.append(visit_counts_topm(tables, chunk, m, config.walks_per_item, config.restart_prob,
                                           config.max_walk_length, config.seed))
            bar.update(len(chunk))
    if not parts:
        return VisitTable(np.zeros((0, m), np.int32), np.zeros((0, m), np.int32))
    return VisitTable(np.concatenate([v.items for v in parts]), np.concatenate([v.counts for v in parts]))


def random_walk_neighbors(graph: BipartiteGraph, config: WalkConfig, hard_negative_depth: int = 0,
                          count_visits=None) -> tuple[Neighbors, VisitTable]:
    """Walk from every item and keep the top ``max(T, hard_negative_depth)`` visited items.

    ``count_visits(graph, m, config) -> VisitTable`` over every item; default: in-process
    :func:`visit_counts_topm` (the Ray engine passes its sharded counter).
    Returns the T-neighbour table and the full visit table (its deeper ranks are the curriculum hard
    negatives of Sec. 3.6).
    """
    m = max(config.top_t, hard_negative_depth)
    if count_visits is None:
        visits = visit_counts_topm(graph, np.arange(graph.n_items, dtype=np.int64), m,
                                   config.walks_per_item, config.restart_prob, config.max_walk_length,
                                   config.seed)
    else:
        visits = count_visits(graph, m, config)
    return neighbors_from_visits(visits, config.top_t), visits
