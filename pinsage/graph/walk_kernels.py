"""The numba kernels of the random walks; :mod:`pinsage.graph.walks` holds the Python API and
the walks' definition (determinism, ties).

Kernel layout (numba): a ``prange`` over ~4 x threads blocks of sources, handed to threads
dynamically; each block owns ONE dense ``int32[n_items]`` counts array and a "touched" list and
resets only the touched entries between sources, so memory beyond the output table is ``O(threads *
n_items)`` whatever the number of sources. Within a source, 32 walks advance in lockstep so that
their independent cache misses overlap. The top-m selection is linear (count histogram + tie-key cut,
no heap). Weighted graphs sample through per-row alias tables (O(1) per draw) rather than a binary
search over cumulative weights: same distribution, ~2.5x faster on power-law graphs with big hubs.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0xD1B54A32D192ED03)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_LO32 = np.uint64(0xFFFFFFFF)
_TIE_MASK = np.uint64(0x7FFFFFFF)  # tie keys live in [0, 2^31)
_TIE_SALT = np.uint64(0x8BB84B93962EACC9)  # tie-key stream: independent of the walk stream
_TIE_M1 = np.uint64(0x5BD1E995)  # odd multipliers of the keyed bijection (mod 2^31) ...
_TIE_M2 = np.uint64(0x27D4EB2F)
_TIE_M3 = np.uint64(0x165667B1)
_TIE_M1_INV = np.uint64(pow(0x5BD1E995, -1, 2**31))  # ... and their inverses
_TIE_M2_INV = np.uint64(pow(0x27D4EB2F, -1, 2**31))
_TIE_M3_INV = np.uint64(pow(0x165667B1, -1, 2**31))
_S15 = np.uint64(15)
_S16 = np.uint64(16)
_TIE_SHIFT = 23  # tie key >> 23: the top 8 bits of a 31-bit tie key, its tie-cut histogram bucket
_TIE_LOW = np.int64(0x7FFFFFFF)
_FULL32 = np.uint64(0xFFFFFFFF)
_HIST = 64  # count histogram buckets of the top-m threshold search (last bucket: >= 63)
_TIE_HIST = 256  # tie-key histogram buckets that cut ties at the threshold count (2^(31 - 23))
_LANES = 32  # walkers of one source advanced in lockstep (memory-level parallelism), see below


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
def _tie_round_keys(seed_u64, source):
    """The three 31-bit round keys of the source's tie-key bijection: a function of (seed, source)."""
    z = _mix64(_mix64(seed_u64 ^ _TIE_SALT) + np.uint64(source) * _GOLDEN)
    z2 = _mix64(z + _GOLDEN)
    return z & _TIE_MASK, (z >> _S32) & _TIE_MASK, z2 & _TIE_MASK


@njit(inline="always")
def _tie_key(j, k0, k1, k2):
    """Keyed bijection of [0, 2^31): item index -> tie key (three xor/add, multiply, xorshift rounds)."""
    x = np.uint64(j)
    x = ((x ^ k0) * _TIE_M1) & _TIE_MASK
    x ^= x >> _S16
    x = (((x + k1) & _TIE_MASK) * _TIE_M2) & _TIE_MASK
    x ^= x >> _S15
    x = ((x ^ k2) * _TIE_M3) & _TIE_MASK
    x ^= x >> _S16
    return np.int64(x)


@njit(inline="always")
def _tie_item(key, k0, k1, k2):
    """Inverse of :func:`_tie_key`: tie key -> item index."""
    x = np.uint64(key)
    x ^= x >> _S16  # x ^= x >> 16 on 31 bits is its own inverse (2 * 16 >= 31)
    x = ((x * _TIE_M3_INV) & _TIE_MASK) ^ k2
    x ^= (x >> _S15) ^ (x >> _S30)  # inverse of x ^= x >> 15 on 31 bits
    x = (((x * _TIE_M2_INV) & _TIE_MASK) - k1) & _TIE_MASK
    x ^= x >> _S16
    x = ((x * _TIE_M1_INV) & _TIE_MASK) ^ k0
    return np.int64(x)


@njit(cache=True)
def tie_keys_kernel(seed_u64, sources, items, out):
    for r in range(sources.shape[0]):
        k0, k1, k2 = _tie_round_keys(seed_u64, sources[r])
        for c in range(items.shape[0]):
            out[r, c] = _tie_key(items[c], k0, k1, k2)



@njit(inline="always")
def _below(u32, n):
    """Uniform integer in [0, n) from 32 random bits (multiply-shift; bias <= n / 2^32)."""
    return np.int64((u32 * np.uint64(n)) >> _S32)


@njit(cache=True)
def alias_table(indptr, weights):
    """Per-row Walker/Vose alias tables over CSR edge weights, one uint64 per edge.

    Entry k of row [a, a+d): high 32 bits = acceptance threshold t (accept cell k iff u32 < t), low
    32 bits = alias offset within the row. Drawing a uniform cell and then accepting or taking the
    alias picks edge k with probability w_k / sum(w) (up to 2^-32 rounding of the thresholds):
    O(1) per draw instead of a binary search over cumulative weights.
    """
    n_rows = indptr.shape[0] - 1
    table = np.empty(weights.shape[0], dtype=np.uint64)
    max_deg = 0
    for i in range(n_rows):
        max_deg = max(max_deg, indptr[i + 1] - indptr[i])
    scaled = np.empty(max_deg, dtype=np.float64)
    small = np.empty(max_deg, dtype=np.int64)
    large = np.empty(max_deg, dtype=np.int64)
    for i in range(n_rows):
        a = indptr[i]
        d = indptr[i + 1] - a
        total = 0.0
        for k in range(d):
            total += np.float64(weights[a + k])
        n_small = 0
        n_large = 0
        for k in range(d):
            table[a + k] = (_FULL32 << _S32) | np.uint64(k)  # full cell: accept (or alias to self)
            x = np.float64(weights[a + k]) * d / total
            scaled[k] = x
            if x < 1.0:
                small[n_small] = k
                n_small += 1
            else:
                large[n_large] = k
                n_large += 1
        while n_small > 0 and n_large > 0:
            n_small -= 1
            k = small[n_small]
            big = large[n_large - 1]
            t = min(np.uint64(scaled[k] * 4294967296.0), _FULL32)
            table[a + k] = (t << _S32) | np.uint64(big)
            scaled[big] = (scaled[big] + scaled[k]) - 1.0
            if scaled[big] < 1.0:
                n_large -= 1
                small[n_small] = big
                n_small += 1
        # cells left on either list hold probability 1 up to rounding: they keep the full entry
    return table


@njit(inline="always")
def _pick_alias(table, start, deg, u_cell, u_accept):
    """Edge index in [start, start+deg), weighted through the row's alias table."""
    k = start + _below(u_cell, deg)
    entry = table[k]
    if u_accept < (entry >> _S32):
        return k
    return start + np.int64(entry & _LO32)


@njit(inline="always")
def _walk_source(src, item_indptr, item_contexts, item_alias, context_indptr, context_items,
                 context_alias, weighted, walks, restart_thresh, max_len, seed_u64, block):
    """Run all walks of one source into ``counts`` (source included); return (#touched, #hops).

    ``block``: the :func:`_block_state` tuple (counts, touched and the lanes' state).

    Up to ``_LANES`` walks of the source are in flight at once and advance in lockstep, one loop
    over the lanes per dependent memory access (item row -> edge -> context row -> edge -> item),
    so each loop issues independent cache misses that the CPU overlaps. A lane whose walk ends takes
    the next of the source's ``walks`` walks, or retires. Per hop and lane: one 64-bit draw whose
    halves choose the context and the item (plus one for the alias acceptances when weighted) and
    one draw for the restart, all from the source's single splitmix64 stream in a fixed order.
    ``touched`` needs room for (#distinct items) + 1 entries (the append is branch-free).
    """
    counts, touched, lane_cur, lane_steps, lane_r, lane_r2, lane_idx = block
    state = _source_state(seed_u64, src)
    n_touched = 0
    hops = 0
    if item_indptr[src + 1] == item_indptr[src]:
        return n_touched, hops  # isolated source: every walk stops at once
    n_active = min(_LANES, walks)
    remaining = walks - n_active
    for lane in range(n_active):
        lane_cur[lane] = src
        lane_steps[lane] = 0
    while n_active > 0:
        for lane in range(n_active):  # item -> edge of the item row
            state += _GOLDEN
            r = _mix64(state)
            lane_r[lane] = r
            cur = lane_cur[lane]
            a = item_indptr[cur]
            deg = item_indptr[cur + 1] - a  # > 0: the source, or an item reached through an edge
            if weighted:
                state += _GOLDEN
                r2 = _mix64(state)
                lane_r2[lane] = r2
                lane_idx[lane] = _pick_alias(item_alias, a, deg, r >> _S32, r2 >> _S32)
            else:
                lane_idx[lane] = a + _below(r >> _S32, deg)
        for lane in range(n_active):  # edge -> context
            lane_idx[lane] = item_contexts[lane_idx[lane]]
        for lane in range(n_active):  # context -> edge of the context row
            c = lane_idx[lane]
            b = context_indptr[c]
            cdeg = context_indptr[c + 1] - b
            if weighted:
                lane_idx[lane] = _pick_alias(context_alias, b, cdeg, lane_r[lane] & _LO32,
                                             lane_r2[lane] & _LO32)
            else:
                lane_idx[lane] = b + _below(lane_r[lane] & _LO32, cdeg)
        for lane in range(n_active):  # edge -> item
            j = context_items[lane_idx[lane]]
            lane_idx[lane] = j
        for lane in range(n_active):  # count the visits (own loop: measured ~10% faster)
            j = lane_idx[lane]
            touched[n_touched] = j  # kept only if j is new (branch-free append)
            n_touched += counts[j] == 0
            counts[j] += 1
        hops += n_active
        for lane in range(n_active - 1, -1, -1):  # continue / restart / retire (back to front)
            state += _GOLDEN
            steps = lane_steps[lane] + 1
            go_on = (np.int64(_mix64(state) >> _S32) >= restart_thresh) & (steps < max_len)
            if go_on | (remaining > 0):  # selects, not branches: the coin flip is unpredictable
                lane_cur[lane] = lane_idx[lane] if go_on else src
                lane_steps[lane] = steps if go_on else 0
                remaining -= not go_on
            else:  # retire: move the last active lane (already processed) into this slot
                n_active -= 1
                lane_cur[lane] = lane_cur[n_active]
                lane_steps[lane] = lane_steps[n_active]
    return n_touched, hops


@njit(inline="always")
def _partition_largest(keys, n, m):
    """Reorder keys[:n] (distinct) so that keys[:m] are its m largest, in no order (quickselect)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1  # median-of-three pivot, deterministic
        x, y, z = keys[lo], keys[mid], keys[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:  # Hoare partition, descending: >= pivot left, <= pivot right
            while keys[i] > pivot:
                i += 1
            while keys[j] < pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if m - 1 <= j:
            hi = j
        elif m - 1 >= i:
            lo = i
        else:
            break


@njit(inline="always")
def _take_topm(src, touched, n_touched, counts, m, seed_u64, keys, hist, tie_hist, out_items,
               out_counts, row):
    """Write the top-m touched items of one source into ``out_*[row]``; reset their counts.

    Order: count descending, then tie key descending, via one int64 key per item
    ``count << 32 | tie_key(item)`` (larger = better; the source gets count 0), where ``tie_key`` is the
    source's seeded bijection of the item index (:func:`tie_keys`): distinct keys, and the item is
    recovered from its key by the inverse bijection. Linear-time selection without a heap: a
    histogram of the (capped) counts gives the count ``theta`` of rank m; when the items tied at
    ``theta`` overflow the m slots, a histogram of their tie keys' top 8 bits gives a tie cut. Both
    cuts together are one key threshold; the keys above it (m plus a few) are compacted branch-free
    and sorted.
    """
    k0, k1, k2 = _tie_round_keys(seed_u64, src)
    n_hist = hist.shape[0]
    hist[:] = 0
    for t in range(n_touched):
        j = touched[t]
        c = np.int64(counts[j])
        counts[j] = 0
        if j == src:
            c = 0
        keys[t] = (c << 32) | _tie_key(j, k0, k1, k2)
        hist[min(c, n_hist - 1)] += 1
    theta = 1  # smallest count that can make the top m (at least 1: visited)
    acc = 0  # number of items with count >= theta
    for c in range(n_hist - 1, 0, -1):
        acc += hist[c]
        if acc >= m:
            theta = c
            break
    limit = (np.int64(theta) << 32) - 1  # keep keys > limit
    if acc > m and theta < n_hist - 1:  # too many ties at theta: keep only the largest tie keys
        need = m - (acc - hist[theta])
        tie_hist[:] = 0
        for t in range(n_touched):
            key = keys[t]
            tie_hist[(key & _TIE_LOW) >> _TIE_SHIFT] += (key >> 32) == theta
        cut = 0
        acc = 0
        for bucket in range(tie_hist.shape[0] - 1, -1, -1):
            acc += tie_hist[bucket]
            if acc >= need:
                cut = bucket
                break
        # tied item is kept iff tie_key >> 23 >= cut  <=>  tie_key > (cut << 23) - 1
        limit = (np.int64(theta) << 32) + (np.int64(cut) << _TIE_SHIFT) - 1
    n_keep = 0
    for t in range(n_touched):
        key = keys[t]
        keys[n_keep] = key
        n_keep += key > limit
    if n_keep > 4 * m + 64:  # counts beyond the histogram cap, or a crowded tie bucket
        _partition_largest(keys, n_keep, m)
        n_keep = m
    top = keys[:n_keep]
    top.sort()
    n_out = min(n_keep, m)
    for r in range(n_out):
        key = top[n_keep - 1 - r]
        out_items[row, r] = np.int32(_tie_item(key & _TIE_LOW, k0, k1, k2))
        out_counts[row, r] = np.int32(key >> 32)
    for r in range(n_out, m):
        out_items[row, r] = -1
        out_counts[row, r] = 0


@njit(inline="always")
def _block_state(n_items, touched_cap):
    """One block's scratch: dense visit counts, the touched list, and per lane (_LANES walks in
    lockstep) its position, hops, two random words and the edge drawn."""
    return (np.zeros(n_items, dtype=np.int32), np.empty(touched_cap, dtype=np.int32),
            np.empty(_LANES, dtype=np.int64), np.empty(_LANES, dtype=np.int64), np.empty(_LANES, dtype=np.uint64),
            np.empty(_LANES, dtype=np.uint64), np.empty(_LANES, dtype=np.int64))


@njit(cache=True)
def _block_bounds(n, n_blocks, b):
    return (b * n) // n_blocks, ((b + 1) * n) // n_blocks


@njit(parallel=True, cache=True)
def topm_kernel(sources, m, item_indptr, item_contexts, item_alias, context_indptr, context_items,
                 context_alias, weighted, walks, restart_thresh, max_len, seed_u64, n_items,
                 n_blocks, touched_cap, out_items, out_counts, block_hops):
    n = sources.shape[0]
    for b in prange(n_blocks):
        lo, hi = _block_bounds(n, n_blocks, b)
        state = _block_state(n_items, touched_cap)
        counts, touched = state[0], state[1]
        keys = np.empty(touched_cap, dtype=np.int64)
        hist = np.empty(_HIST, dtype=np.int64)
        tie_hist = np.empty(_TIE_HIST, dtype=np.int64)
        total = 0
        for k in range(lo, hi):
            src = sources[k]
            n_touched, hops = _walk_source(src, item_indptr, item_contexts, item_alias, context_indptr,
                                           context_items, context_alias, weighted, walks, restart_thresh,
                                           max_len, seed_u64, state)
            total += hops
            if m > 0:
                _take_topm(src, touched, n_touched, counts, m, seed_u64, keys, hist,
                           tie_hist, out_items, out_counts, k)
            else:
                for t in range(n_touched):
                    counts[touched[t]] = 0
        block_hops[b] = total


@njit(parallel=True, cache=True)
def dense_kernel(sources, item_indptr, item_contexts, item_alias, context_indptr, context_items,
                  context_alias, weighted, walks, restart_thresh, max_len, seed_u64, n_items,
                  n_blocks, touched_cap, out):
    n = sources.shape[0]
    for b in prange(n_blocks):
        lo, hi = _block_bounds(n, n_blocks, b)
        state = _block_state(n_items, touched_cap)
        counts, touched = state[0], state[1]
        for k in range(lo, hi):
            src = sources[k]
            n_touched = _walk_source(src, item_indptr, item_contexts, item_alias, context_indptr, context_items,
                                     context_alias, weighted, walks, restart_thresh, max_len, seed_u64, state)[0]
            for t in range(n_touched):
                j = touched[t]
                if j != src:
                    out[k, j] = np.float32(counts[j])
                counts[j] = 0
