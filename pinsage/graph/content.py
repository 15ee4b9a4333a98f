"""Content neighbourhoods: the importance neighbourhood an item without interactions borrows.

A walk from an item without edges visits nothing, so a new item (cold start) would be convolved over
an empty neighbourhood, a state the network never saw. Instead it borrows the neighbourhood of its
look-alikes: the ``top_t`` trained items nearest by content. Training shows the network the same
state (``SamplerConfig.cold_share``: a share of the pairs' items are replaced by their cold twin,
which has this neighbourhood, no id vector and an unknown degree), so the two are built here, once.

Content = the vector features (annotation, and visual when present), each block **centred** on the
candidates' mean and L2-normalised, compared by cosine. Uncentred word-vector averages all point
the same way (random pairs of MovieLens titles average a cosine of .53), which makes every item look
alike; centred, the cosine measures what distinguishes them.

Weights are not the cosines: they follow the walk neighbourhoods' own rank profile (the mean
L1-normalised visit weight at each rank over the catalogue, :func:`rank_profile`), so a content
neighbourhood weighs its ranks the way the walk neighbourhoods the network was trained on do.
"""

from __future__ import annotations

import numpy as np

from pinsage.graph.neighbors import Neighbors
from pinsage.graph.walks import tie_keys

COSINE_GRID = 1e6  # cosines equal to 6 decimals are ties (broken by the walks' seeded tie keys)


def content_vectors(blocks: list[np.ndarray], candidates: np.ndarray) -> np.ndarray:
    """Blocks [(N, F_b)] -> (N, sum F_b) float32 rows of norm <= 1: each block centred on the
    ``candidates``' mean, L2-normalised, then all scaled by 1/sqrt(#blocks) (equal say per block)."""
    parts = []
    for m in blocks:
        m = np.asarray(m, dtype=np.float32)
        c = m - m[candidates].mean(axis=0, keepdims=True)  # (N, F_b)
        parts.append(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1) / np.float32(np.sqrt(len(parts)))  # (N, F)


def rank_profile(walks: Neighbors) -> np.ndarray:
    """(T,) float32: the mean weight at each rank over the items whose walk neighbourhood is full
    (all T slots), L1-normalised; uniform when no item has a full neighbourhood."""
    full = walks.mask.all(axis=1)
    t = walks.top_t
    if not full.any():
        return np.full(t, 1.0 / t, dtype=np.float32)
    p = walks.weights[full].astype(np.float64).mean(axis=0)  # (T,)
    return (p / p.sum()).astype(np.float32)


def content_neighbors(vectors: np.ndarray, sources: np.ndarray, candidates: np.ndarray, profile: np.ndarray,
                      seed: int = 0, chunk: int = 1024) -> Neighbors:
    """The ``T = len(profile)`` candidates nearest to each source by content, never the source itself.

    Args:
        vectors: (N, F) :func:`content_vectors`.
        sources: (S,) catalogue rows to give a neighbourhood.
        candidates: (C,) catalogue rows that may be neighbours (trained items: they have id vectors
            and walk neighbourhoods of their own).
        profile: (T,) weight by rank (:func:`rank_profile`); a row with fewer than T positive cosines
            keeps those and renormalises its profile prefix.
        seed: equal cosines (identical features are common: same words, no image) are ordered by
            the walks' seeded tie keys of (seed, source, candidate), never by catalogue index.
    Returns:
        Neighbors with S rows: items (S, T) int32, weights (S, T) float32, mask (S, T) prefix.
    """
    sources = np.asarray(sources, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.int64)
    t_max = len(profile)
    items = np.zeros((len(sources), t_max), np.int32)
    weights = np.zeros((len(sources), t_max), np.float32)
    mask = np.zeros((len(sources), t_max), bool)
    t = min(t_max, len(candidates))
    if t == 0:
        return Neighbors(items, weights, mask)
    cand = vectors[candidates]  # (C, F)
    for lo in range(0, len(sources), chunk):
        src = sources[lo:lo + chunk]
        sims = vectors[src] @ cand.T  # (s, C)
        sims[candidates[None, :] == src[:, None]] = -np.inf  # never the item itself
        # one int64 key per candidate: the cosine on a 1e-6 grid, then the seeded tie key (< 2^31)
        grid = np.round(np.where(np.isfinite(sims), sims, -2.0) * COSINE_GRID).astype(np.int64)  # (s, C)
        key = grid * (1 << 31) + tie_keys(seed, src, candidates)  # (s, C)
        top = np.argpartition(-key, t - 1, axis=1)[:, :t]  # (s, t) unordered
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, axis=1), axis=1), axis=1)
        best = np.take_along_axis(sims, order, axis=1)  # (s, t) descending
        keep = best > 0  # a prefix: the cosines are sorted
        w = np.where(keep, profile[None, :t], 0.0)
        rows = slice(lo, lo + len(src))
        items[rows, :t] = np.where(keep, candidates[order], 0)
        weights[rows, :t] = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        mask[rows, :t] = keep
    return Neighbors(items, weights, mask)


def engaged_beside(context: np.ndarray, item: np.ndarray, source: np.ndarray, window: int, ordered: bool,
                   partner_ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The items engaged beside some interactions: the way the loss defines positives.

    Args:
        context, item: (M,) interactions grouped by context, each context in engagement order.
        source: (M,) bool, the interactions whose neighbours are wanted (a new item's revealed ones).
        window: ``ordered`` (timestamps known): partners within ``window`` steps before or after;
            otherwise every other interaction of the context.
        partner_ok: (M,) bool, the interactions that may be partners (default: all).
    Returns:
        (source items, partner items), one entry per (source interaction, partner interaction).
    """
    m = len(item)
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.flatnonzero(np.r_[True, context[1:] != context[:-1]])
    length = np.diff(np.r_[start, m])
    first = np.repeat(start, length)  # (M,) first row of each row's context
    end = first + np.repeat(length, length)  # (M,) one past its last row
    at = np.flatnonzero(source)
    if ordered:
        offsets = np.array([o for o in range(-window, window + 1) if o], dtype=np.int64)
        src = np.repeat(at, len(offsets))
        partner = src + np.tile(offsets, len(at))
    else:  # every row of the context
        span = end[at] - first[at]
        src = np.repeat(at, span)
        partner = np.repeat(first[at], span) + (np.arange(len(src)) - np.repeat(np.cumsum(span) - span, span))
    ok = (partner >= first[src]) & (partner < end[src]) & (partner != src)
    src, partner = src[ok], partner[ok]
    if partner_ok is not None:
        keep = partner_ok[partner]
        src, partner = src[keep], partner[keep]
    return item[src].astype(np.int64), item[partner].astype(np.int64)


def beside_first(sources: np.ndarray, partners: np.ndarray, rows: np.ndarray, content: Neighbors,
                 profile: np.ndarray, seed: int) -> Neighbors:
    """Neighbourhoods of ``rows``: the items engaged beside each (``sources``/``partners`` from
    :func:`engaged_beside`; most often first, equal counts by the walks' seeded tie keys), then its
    content neighbours (``content``, one row per entry of ``rows``) not already there; weighted by
    rank with ``profile``. -> Neighbors with len(rows) rows."""
    t = len(profile)
    items = np.zeros((len(rows), t), np.int32)
    mask = np.zeros((len(rows), t), bool)
    keep = np.isin(sources, rows)
    pairs, counts = np.unique(np.stack([sources[keep], partners[keep]]), axis=1, return_counts=True)
    by_row = {}
    if pairs.size:
        cuts = np.flatnonzero(np.r_[True, pairs[0, 1:] != pairs[0, :-1], True])
        for a, b in zip(cuts[:-1], cuts[1:]):
            by_row[int(pairs[0, a])] = (pairs[1, a:b], counts[a:b])
    for r, row in enumerate(rows):
        chosen: list[int] = []
        got = by_row.get(int(row))
        if got is not None:
            cand, cnt = got
            ties = tie_keys(seed, np.array([row]), cand)[0]
            chosen = [int(i) for i in cand[np.lexsort((-ties, -cnt))][:t]]
        taken = set(chosen)
        chosen += [int(i) for i in content.items[r][content.mask[r]] if int(i) not in taken][:t - len(chosen)]
        items[r, :len(chosen)], mask[r, :len(chosen)] = chosen, True
    w = np.where(mask, profile[None, :], 0.0)
    return Neighbors(items, (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32), mask)
