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

Kernel layout: a numba ``prange`` over ~4 x threads blocks of sources; each block owns ONE dense
``int32[n_items]`` counts array and a "touched" list, resets only touched entries between sources,
and selects the top-m by a size-m min-heap over the touched items. Memory beyond the output table is
therefore ``O(blocks * n_items)``, independent of the number of sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit, prange

from .graph import BipartiteGraph
from .io import write_table


@dataclass
class WalkConfig:
    walks_per_item: int = 200  # paper-scale counts need a few hundred hops per item for a stable top-50
    restart_prob: float = 0.5  # mean walk ~2 hops: neighbourhoods stay local (2-4 hop items dominate)
    max_walk_length: int = 8  # hard cap; with restart 0.5 a walk reaches it with prob 2^-7 < 1%
    top_t: int = 20  # T: neighbours kept per item (paper: T=50 best, Table 4); 20 is cheaper to train
    seed: int = 0  # walks are a pure function of (graph, config): re-runs give identical tables


@dataclass
class VisitTable:
    items: np.ndarray  # (N, M) int32 top-M visited item indices per source, best first, -1 padded
    counts: np.ndarray  # (N, M) int32 visit counts alongside, 0 where padded


# --------------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0xD1B54A32D192ED03)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)
_INV32 = 1.0 / 4294967296.0
_KEY_IDX = np.int64(0x7FFFFFFF)
_LANES = 4  # interleaved walkers per source (memory-level parallelism); 4-8 measured best


@njit(inline="always")
def _mix64(z):
    """splitmix64 finaliser (uint64 -> uint64)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(inline="always")
def _source_state(seed_u64, source):
    """Initial splitmix64 state of one source's stream: a function of (seed, source item) only."""
    return _mix64(_mix64(seed_u64 ^ _SEED_SALT) + np.uint64(source) * _GOLDEN)


@njit(inline="always")
def _pick_weighted(cum, start, deg, u32):
    """Edge in [start, start+deg) with probability w_k / sum(w): cum[k+1] - cum[k] = w_k."""
    base = cum[start]
    target = base + (np.float64(u32) * _INV32) * (cum[start + deg] - base)
    lo = start
    hi = start + deg - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if cum[mid + 1] > target:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(inline="always")
def _walk_source(src, item_indptr, item_contexts, item_cum, context_indptr, context_items,
                 context_cum, weighted, walks, restart_thresh, max_len, seed_u64, counts, touched,
                 lane_cur, lane_steps, lane_quota):
    """Run all walks of one source into ``counts`` (source included); return (#touched, #hops).

    The walks of a source are spread over ``_LANES`` interleaved walkers (lane l runs walks
    l, l + L, ...) so that the CPU overlaps the dependent cache misses of independent walkers. Per
    hop: one 64-bit draw whose high/low 32 bits choose the context and the item (multiply-shift
    range reduction, or a binary search over cumulative weights), one draw for the restart.
    ``touched`` needs room for (#distinct items) + 1 entries (the append is branch-free).
    """
    state = _source_state(seed_u64, src)
    n_touched = 0
    hops = 0
    if item_indptr[src + 1] == item_indptr[src]:
        return n_touched, hops  # isolated source: every walk stops at once
    active = 0
    for lane in range(_LANES):
        quota = walks // _LANES + (1 if lane < walks % _LANES else 0)
        lane_quota[lane] = quota
        lane_cur[lane] = src
        lane_steps[lane] = 0
        if quota > 0:
            active += 1
    while active > 0:
        for lane in range(_LANES):
            if lane_quota[lane] == 0:
                continue
            state += _GOLDEN
            r = _mix64(state)
            cur = lane_cur[lane]
            a = item_indptr[cur]
            deg = item_indptr[cur + 1] - a  # > 0: cur is the source or was reached through an edge
            if weighted:
                e = _pick_weighted(item_cum, a, deg, r >> _S32)
            else:
                e = a + np.int64(((r >> _S32) * np.uint64(deg)) >> _S32)
            c = item_contexts[e]
            b = context_indptr[c]
            cdeg = context_indptr[c + 1] - b
            if weighted:
                f = _pick_weighted(context_cum, b, cdeg, r & _LO32)
            else:
                f = b + np.int64(((r & _LO32) * np.uint64(cdeg)) >> _S32)
            j = context_items[f]
            touched[n_touched] = j  # kept only if j is new (branch-free append)
            n_touched += counts[j] == 0
            counts[j] += 1
            hops += 1
            state += _GOLDEN
            steps = lane_steps[lane] + 1
            end = (np.int64(_mix64(state) >> _S32) < restart_thresh) | (steps >= max_len)
            lane_cur[lane] = src if end else j
            lane_steps[lane] = 0 if end else steps
            quota = lane_quota[lane] - end
            lane_quota[lane] = quota
            if quota == 0:
                active -= 1
    return n_touched, hops


@njit(inline="always")
def _heap_sift_down(heap, size, pos):
    key = heap[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] < key:
            heap[pos] = heap[child]
            pos = child
        else:
            break
    heap[pos] = key


@njit(inline="always")
def _heap_push(heap, size, key):
    pos = size
    while pos > 0:
        parent = (pos - 1) >> 1
        if heap[parent] > key:
            heap[pos] = heap[parent]
            pos = parent
        else:
            break
    heap[pos] = key


@njit(cache=True)
def _block_bounds(n, n_blocks, b):
    return (b * n) // n_blocks, ((b + 1) * n) // n_blocks


@njit(parallel=True, cache=True)
def _topm_kernel(sources, m, item_indptr, item_contexts, item_cum, context_indptr, context_items,
                 context_cum, weighted, walks, restart_thresh, max_len, seed_u64, n_items, n_blocks,
                 touched_cap, out_items, out_counts, block_hops):
    n = sources.shape[0]
    for b in prange(n_blocks):
        lo, hi = _block_bounds(n, n_blocks, b)
        counts = np.zeros(n_items, dtype=np.int32)
        touched = np.empty(touched_cap, dtype=np.int32)
        lane_cur = np.empty(_LANES, dtype=np.int64)
        lane_steps = np.empty(_LANES, dtype=np.int64)
        lane_quota = np.empty(_LANES, dtype=np.int64)
        heap = np.empty(max(m, 1), dtype=np.int64)
        total = 0
        for k in range(lo, hi):
            src = sources[k]
            n_touched, hops = _walk_source(src, item_indptr, item_contexts, item_cum,
                                           context_indptr, context_items, context_cum, weighted,
                                           walks, restart_thresh, max_len, seed_u64, counts,
                                           touched, lane_cur, lane_steps, lane_quota)
            total += hops
            # top-m by (count desc, index asc): key = count << 32 | (2^31 - 1 - index), max wins
            size = 0
            for t in range(n_touched):
                j = touched[t]
                cnt = counts[j]
                counts[j] = 0
                if j == src or m == 0:
                    continue
                key = (np.int64(cnt) << 32) | (_KEY_IDX - j)
                if size < m:
                    _heap_push(heap, size, key)
                    size += 1
                elif key > heap[0]:
                    heap[0] = key
                    _heap_sift_down(heap, size, 0)
            # pop ascending into the tail of the row -> best first
            for r in range(size - 1, -1, -1):
                key = heap[0]
                out_items[k, r] = np.int32(_KEY_IDX - (key & 0xFFFFFFFF))
                out_counts[k, r] = np.int32(key >> 32)
                heap[0] = heap[r]
                _heap_sift_down(heap, r, 0)
            for r in range(size, m):
                out_items[k, r] = -1
                out_counts[k, r] = 0
        block_hops[b] = total


@njit(parallel=True, cache=True)
def _dense_kernel(sources, item_indptr, item_contexts, item_cum, context_indptr, context_items,
                  context_cum, weighted, walks, restart_thresh, max_len, seed_u64, n_items,
                  n_blocks, touched_cap, out):
    n = sources.shape[0]
    for b in prange(n_blocks):
        lo, hi = _block_bounds(n, n_blocks, b)
        counts = np.zeros(n_items, dtype=np.int32)
        touched = np.empty(touched_cap, dtype=np.int32)
        lane_cur = np.empty(_LANES, dtype=np.int64)
        lane_steps = np.empty(_LANES, dtype=np.int64)
        lane_quota = np.empty(_LANES, dtype=np.int64)
        for k in range(lo, hi):
            src = sources[k]
            n_touched, _hops = _walk_source(src, item_indptr, item_contexts, item_cum,
                                            context_indptr, context_items, context_cum, weighted,
                                            walks, restart_thresh, max_len, seed_u64, counts,
                                            touched, lane_cur, lane_steps, lane_quota)
            for t in range(n_touched):
                j = touched[t]
                if j != src:
                    out[k, j] = np.float32(counts[j])
                counts[j] = 0


# --------------------------------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------------------------------


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """(E,) weights -> (E+1,) float64 running sums, cum[0] = 0 (one global array for all rows)."""
    cum = np.zeros(len(weights) + 1, dtype=np.float64)
    np.cumsum(weights, dtype=np.float64, out=cum[1:])
    return cum


def _prepare(graph: BipartiteGraph, sources, walks_per_item: int, restart_prob: float,
             max_walk_length: int, seed: int):
    """Validate arguments and return the fixed-dtype arguments shared by both kernels."""
    if walks_per_item < 0:
        raise ValueError(f"walks_per_item must be >= 0, got {walks_per_item}")
    if not 0.0 <= restart_prob <= 1.0:
        raise ValueError(f"restart_prob must be in [0, 1], got {restart_prob}")
    if max_walk_length < 1:
        raise ValueError(f"max_walk_length must be >= 1, got {max_walk_length}")
    if graph.n_items >= 2**31 - 1:
        raise ValueError("n_items must fit in int32")
    sources = np.ascontiguousarray(sources, dtype=np.int64).reshape(-1)
    if len(sources) and (sources.min() < 0 or sources.max() >= graph.n_items):
        raise ValueError(f"source index out of range [0, {graph.n_items})")
    iw, cw = graph.item_weights, graph.context_weights
    weighted = bool(len(iw) and (iw.min() != iw.max() or cw.min() != cw.max()))
    if weighted:
        if iw.min() <= 0 or cw.min() <= 0:
            raise ValueError("edge weights must be positive")
        item_cum, context_cum = _cumulative(iw), _cumulative(cw)
    else:
        item_cum = context_cum = np.zeros(1, dtype=np.float64)  # unused by the uniform path
    n_threads = numba.get_num_threads()
    n_blocks = max(1, min(len(sources), 4 * n_threads))
    # distinct items one source can touch (every hop a new item), +1 for the branch-free append
    touched_cap = min(graph.n_items, walks_per_item * max_walk_length) + 1
    restart_thresh = np.int64(round(restart_prob * 2.0**32))  # restart iff u32 < thresh
    seed_u64 = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    graph_args = (np.ascontiguousarray(graph.item_indptr, dtype=np.int64),
                  np.ascontiguousarray(graph.item_contexts, dtype=np.int32), item_cum,
                  np.ascontiguousarray(graph.context_indptr, dtype=np.int64),
                  np.ascontiguousarray(graph.context_items, dtype=np.int32), context_cum,
                  weighted, np.int64(walks_per_item), restart_thresh, np.int64(max_walk_length),
                  seed_u64, np.int64(graph.n_items), np.int64(n_blocks), np.int64(touched_cap))
    return sources, graph_args


def _walk_topm(graph: BipartiteGraph, sources: np.ndarray, m: int, walks_per_item: int,
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
        _topm_kernel(sources, np.int64(m), *args, items, counts, block_hops)
    return VisitTable(items, counts), int(block_hops.sum())


def visit_counts_topm(graph: BipartiteGraph, sources: np.ndarray, m: int, walks_per_item: int,
                      restart_prob: float, max_walk_length: int, seed: int) -> VisitTable:
    """Random walks with restart from each source item over item->context->item hops.

    Counts visits of every item reached (the source itself excluded) and keeps the top-m items by
    visit count, ties broken by smaller item index. Deterministic for a seed, independent of thread
    count and scheduling: each source's RNG is seeded from (seed, source item index) via splitmix64.

    Returns:
        VisitTable with (len(sources), m) int32 ``items`` (-1 padded) and ``counts`` (0 padded).
    """
    return _walk_topm(graph, sources, m, walks_per_item, restart_prob, max_walk_length, seed)[0]


def dense_visit_counts(graph: BipartiteGraph, sources: np.ndarray, walks_per_item: int,
                       restart_prob: float, max_walk_length: int, seed: int) -> np.ndarray:
    """(len(sources), n_items) float32 visit counts, the source's own entry 0 (Pixie baseline).

    Same walks as :func:`visit_counts_topm` for the same arguments, so the counts agree exactly.
    Meant for a few hundred query items: the output is dense.
    """
    sources, args = _prepare(graph, sources, walks_per_item, restart_prob, max_walk_length, seed)
    out = np.zeros((len(sources), graph.n_items), dtype=np.float32)
    if len(sources):
        _dense_kernel(sources, *args, out)
    return out


# --------------------------------------------------------------------------------------------------
# Neighbour table
# --------------------------------------------------------------------------------------------------


@dataclass
class Neighbors:
    items: np.ndarray  # (N, T) int32 neighbour indices; padded entries = 0 with weight 0 (use mask)
    weights: np.ndarray  # (N, T) float32 L1-normalised importance (rows sum to 1, or all zero)
    mask: np.ndarray  # (N, T) bool, True where a real neighbour (always a prefix of the row)

    @property
    def top_t(self) -> int:
        return int(self.items.shape[1])

    def save(self, path, item_ids: np.ndarray) -> None:
        """Write ``neighbors.parquet`` atomically.

        Columns: ``item_id`` (string), ``neighbors`` (fixed-size list<int32>[T], dense indices, 0 where
        padded), ``neighbor_ids`` (list<string>, real neighbours only, best first) and ``weights``
        (fixed-size list<float32>[T]). The mask is recovered from the ``neighbor_ids`` lengths.
        """
        item_ids = np.asarray(item_ids).astype(str)
        n, t = self.items.shape
        if len(item_ids) != n:
            raise ValueError(f"item_ids has {len(item_ids)} entries, table has {n} rows")
        mask = np.asarray(self.mask, dtype=bool)
        n_real = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(t)[None, :] < n_real[:, None]):
            raise ValueError("mask must be a prefix of every row (real neighbours first)")
        items = np.ascontiguousarray(self.items, dtype=np.int32)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(n_real, out=offsets[1:])
        real_ids = pa.array(item_ids[items[mask]], type=pa.string())  # row-major = per-row prefix
        table = pa.table({
            "item_id": pa.array(item_ids, type=pa.string()),
            "neighbors": pa.FixedSizeListArray.from_arrays(pa.array(items.reshape(-1)), t),
            "neighbor_ids": pa.ListArray.from_arrays(pa.array(offsets), real_ids),
            "weights": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(self.weights, dtype=np.float32).reshape(-1)), t),
        })
        write_table(path, table)

    @classmethod
    def load(cls, path) -> "Neighbors":
        table = pq.read_table(Path(path), columns=["neighbors", "neighbor_ids", "weights"])
        n = table.num_rows
        nb = table.column("neighbors").combine_chunks()
        t = nb.type.list_size
        items = np.asarray(nb.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)
        w = table.column("weights").combine_chunks()
        weights = np.asarray(w.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        n_real = pc.list_value_length(table.column("neighbor_ids")).to_numpy(
            zero_copy_only=False)
        n_real = np.nan_to_num(np.asarray(n_real, dtype=np.float64)).astype(np.int64)
        mask = np.arange(t)[None, :] < n_real[:, None]
        return cls(items.reshape(n, t), weights.reshape(n, t), mask)


def neighbors_from_visits(visits: VisitTable, top_t: int) -> Neighbors:
    """First ``top_t`` columns of a visit table, L1-normalised counts as weights, explicit mask.

    Rows with fewer than ``top_t`` visited items are padded (index 0, weight 0, mask False); a row
    with no visit at all (isolated item) is all-masked with zero weights.
    """
    if top_t < 0:
        raise ValueError(f"top_t must be >= 0, got {top_t}")
    n, m = visits.items.shape
    items = np.full((n, top_t), -1, dtype=np.int32)
    counts = np.zeros((n, top_t), dtype=np.float64)
    k = min(m, top_t)
    items[:, :k] = visits.items[:, :k]
    counts[:, :k] = visits.counts[:, :k]
    mask = items >= 0
    counts[~mask] = 0.0
    total = counts.sum(axis=1, keepdims=True)
    weights = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return Neighbors(np.where(mask, items, 0).astype(np.int32), weights.astype(np.float32), mask)


def random_walk_neighbors(graph: BipartiteGraph, config: WalkConfig,
                          hard_negative_depth: int = 0) -> tuple[Neighbors, VisitTable]:
    """Walk from every item and keep the top ``max(T, hard_negative_depth)`` visited items.

    Returns the T-neighbour table and the full visit table (its deeper ranks are the curriculum hard
    negatives of Sec. 3.6).
    """
    m = max(config.top_t, hard_negative_depth)
    visits = visit_counts_topm(graph, np.arange(graph.n_items, dtype=np.int64), m,
                               config.walks_per_item, config.restart_prob, config.max_walk_length,
                               config.seed)
    return neighbors_from_visits(visits, config.top_t), visits
