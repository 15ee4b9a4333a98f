"""Random walks with restart: neighbourhood structure, exact hop probabilities, determinism, I/O."""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage.graph.bipartite import BipartiteGraph, build_graph
from pinsage.graph.neighbors import Neighbors, VisitTable, neighbors_from_visits
from pinsage.graph.walks import (
    WalkConfig,
    dense_visit_counts,
    random_walk_neighbors,
    tie_keys,
    visit_counts_topm,
    walk_topm,
)


def _random_graph(n_items: int, n_contexts: int, n_edges: int, seed: int, weighted: bool,
                  isolated: int = 0) -> BipartiteGraph:
    """Random bipartite graph, every non-isolated item and every context with at least one edge.

    The last ``isolated`` items get no edge at all.
    """
    rng = np.random.default_rng(seed)
    n_conn = n_items - isolated
    items = np.concatenate([np.arange(n_conn), rng.integers(0, n_conn, n_contexts),
                            rng.integers(0, n_conn, n_edges)])
    contexts = np.concatenate([rng.integers(0, n_contexts, n_conn), np.arange(n_contexts),
                               rng.integers(0, n_contexts, n_edges)])
    key = np.unique(items * n_contexts + contexts)
    items, contexts = key // n_contexts, key % n_contexts
    weights = rng.uniform(0.2, 5.0, len(items)).astype(np.float32) if weighted else None
    return build_graph(items, contexts, n_items, n_contexts, weights)


def _transition(graph: BipartiteGraph) -> np.ndarray:
    """Exact one-hop matrix P[i, j] = sum_c w_ic / W_i * w_cj / W_c, from the CSR arrays."""
    p_ic = np.zeros((graph.n_items, graph.n_contexts))
    for i in range(graph.n_items):
        lo, hi = graph.item_indptr[i], graph.item_indptr[i + 1]
        w = graph.item_weights[lo:hi].astype(np.float64)
        if len(w):
            p_ic[i, graph.item_contexts[lo:hi]] = w / w.sum()
    p_ci = np.zeros((graph.n_contexts, graph.n_items))
    for c in range(graph.n_contexts):
        lo, hi = graph.context_indptr[c], graph.context_indptr[c + 1]
        w = graph.context_weights[lo:hi].astype(np.float64)
        p_ci[c, graph.context_items[lo:hi]] = w / w.sum()
    return p_ic @ p_ci


def _assert_tables_equal(a: VisitTable, b: VisitTable) -> None:
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.counts, b.counts)


# --------------------------------------------------------------------------------------------------


def test_two_communities_stay_separate():
    rng = np.random.default_rng(0)
    items, contexts = [], []
    for block in range(2):  # items 0..29 x contexts 0..14, items 30..59 x contexts 15..29
        it = rng.integers(0, 30, 300) + 30 * block
        ct = rng.integers(0, 15, 300) + 15 * block
        items += [it, np.arange(30) + 30 * block]
        contexts += [ct, rng.integers(0, 15, 30) + 15 * block]
    graph = build_graph(np.concatenate(items), np.concatenate(contexts), 60, 30)
    neighbors, visits = random_walk_neighbors(graph, WalkConfig(walks_per_item=300, top_t=10))
    community = np.arange(60) // 30
    assert neighbors.mask.sum(axis=1).min() == 10  # everyone has a full neighbourhood
    assert np.all(community[neighbors.items][neighbors.mask]
                  == np.broadcast_to(community[:, None], neighbors.items.shape)[neighbors.mask])
    assert np.all(neighbors.items[neighbors.mask]
                  != np.broadcast_to(np.arange(60)[:, None], neighbors.items.shape)[neighbors.mask])
    assert visits.items.shape == (60, 10)


@pytest.mark.parametrize("weighted", [False, True])
def test_one_hop_frequencies_match_exact_probabilities(weighted):
    graph = _random_graph(12, 7, 30, seed=1, weighted=weighted)
    assert (np.unique(graph.item_weights).size > 1) == weighted
    p = _transition(graph)
    sources = np.arange(graph.n_items)
    dense = dense_visit_counts(graph, sources, walks_per_item=100_000, restart_prob=0.3,
                               max_walk_length=1, seed=3)
    for i in sources:
        expected = p[i].copy()
        expected[i] = 0.0
        if expected.sum() == 0:  # only the source itself is reachable
            assert dense[i].sum() == 0
            continue
        expected /= expected.sum()
        n = dense[i].sum()
        observed = dense[i] / n
        assert dense[i, i] == 0
        # within 5 binomial standard errors of each frequency (and exactly 0 where it must be)
        tol = 5 * np.sqrt(expected * (1 - expected) / n)
        assert np.all(np.abs(observed - expected) <= tol), (i, observed, expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_two_hop_walks_continue_through_the_source(weighted):
    """restart 0, length 2: E[count_ij] = walks * (P + P @ P)_ij, source landings not counted."""
    graph = _random_graph(8, 5, 14, seed=2, weighted=weighted)
    p = _transition(graph)
    walks = 100_000
    dense = dense_visit_counts(graph, np.arange(8), walks, restart_prob=0.0, max_walk_length=2,
                               seed=5)
    expected = walks * (p + p @ p)
    np.fill_diagonal(expected, 0.0)
    # a walk visits j 0, 1 or 2 times (c^2 <= 2c): the mean count per walk has a standard error of at
    # most sqrt(2 E[c] / walks); within 5 of them
    mean = expected / walks
    tol = 5 * np.sqrt(2 * mean / walks)
    assert np.all(np.abs(dense / walks - mean) <= tol), np.abs(dense / walks - mean).max()


def test_walk_lengths_are_truncated_geometric():
    graph = _random_graph(50, 20, 200, seed=3, weighted=False)
    walks, p, length = 2000, 0.4, 5
    _, hops = walk_topm(graph, np.arange(50), 5, walks, p, length, seed=0)
    mean_len = sum((1 - p) ** k for k in range(length))  # P(walk has > k hops) = (1-p)^k
    assert abs(hops / (50 * walks) - mean_len) < 0.02 * mean_len
    _, hops = walk_topm(graph, np.arange(50), 5, walks, 0.0, length, seed=0)
    assert hops == 50 * walks * length
    _, hops = walk_topm(graph, np.arange(50), 5, walks, 1.0, length, seed=0)
    assert hops == 50 * walks


def test_deterministic_and_thread_independent():
    graph = _random_graph(300, 80, 2000, seed=4, weighted=True)
    sources = np.arange(graph.n_items)
    args = (30, 50, 0.5, 6)
    a = visit_counts_topm(graph, sources, *args, seed=11)
    _assert_tables_equal(a, visit_counts_topm(graph, sources, *args, seed=11))
    b = visit_counts_topm(graph, sources, *args, seed=12)
    assert not np.array_equal(a.counts, b.counts)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = visit_counts_topm(graph, sources, *args, seed=11)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = visit_counts_topm(graph, sources, *args, seed=11)
    finally:
        numba.set_num_threads(before)
    _assert_tables_equal(one, a)
    _assert_tables_equal(many, a)
    # a source's walks do not depend on which other sources share the call
    subset = np.array([299, 5, 5, 120])
    _assert_tables_equal(visit_counts_topm(graph, subset, *args, seed=11),
                         VisitTable(a.items[subset], a.counts[subset]))


@pytest.mark.parametrize("weighted,walks,m", [
    (False, 40, 25),  # mostly counts 1-3: many ties at the rank-m count, cut by the seeded tie key
    (True, 40, 25),
    (False, 40, 3),
    (False, 3000, 25),  # counts far above the selection histogram's cap
    (True, 40, 1000),  # m above the number of visited items: padded rows
])
def test_dense_counts_agree_with_topm(weighted, walks, m):
    graph = _random_graph(1500, 300, 4000, seed=5, weighted=weighted, isolated=3)
    sources = np.array([0, 7, 1499, 42, 7, 800, 1498])
    args = (walks, 0.5, 8, 9)
    dense = dense_visit_counts(graph, sources, *args)
    top = visit_counts_topm(graph, sources, m, *args)
    assert dense.dtype == np.float32 and dense.shape == (len(sources), graph.n_items)
    assert top.items.shape == top.counts.shape == (len(sources), m)
    assert np.all(dense[np.arange(len(sources)), sources] == 0)
    ties_cut = False
    keys = tie_keys(9, sources, np.arange(graph.n_items))  # the kernel's tie-break, seed 9
    for k in range(len(sources)):
        order = np.lexsort((-keys[k], -dense[k]))[:m]  # count desc, then tie key desc
        order = order[dense[k, order] > 0]
        n = len(order)
        np.testing.assert_array_equal(top.items[k, :n], order)
        np.testing.assert_array_equal(top.counts[k, :n], dense[k, order].astype(np.int32))
        assert np.all(top.items[k, n:] == -1) and np.all(top.counts[k, n:] == 0)
        if n == m:
            ties_cut |= bool((dense[k] == dense[k, order[-1]]).sum() > (top.counts[k] ==
                                                                       top.counts[k, -1]).sum())
    assert np.all(dense[-1] == 0) and np.all(top.items[-1] == -1)  # item 1498 is isolated
    if m < 100:  # the tie-break was really exercised
        assert ties_cut


def _star(n_items: int) -> BipartiteGraph:
    """One context holding every item: from any source, every other item is equally likely."""
    return build_graph(np.arange(n_items), np.zeros(n_items, dtype=np.int64), n_items, 1)


def _tied_selection(visits: VisitTable, dense: np.ndarray):
    """Per row: (items selected at the rank-m count, all items at that count) when the cut is a tie."""
    out = []
    for k in range(len(dense)):
        theta = visits.counts[k, -1]
        tied = np.flatnonzero(dense[k] == theta)
        chosen = visits.items[k][visits.counts[k] == theta]
        if theta > 0 and len(tied) > len(chosen):
            out.append((chosen, tied))
    return out


def test_ties_at_the_cut_are_not_the_lowest_indices():
    """A star: 100 equally likely neighbours, few visits each, so the top-10 cut is a large tie.

    Ties broken by index keep the lowest-indexed tied items (measured with the old kernel: mean
    index 9.9 of 0-100, relative rank in the tie 0.06); the seeded tie-break keeps a random part of
    the tie (49.4 and 0.48).
    """
    graph = _star(101)
    sources = np.arange(0, 101, 5)
    chosen_idx, rank_in_tie = [], []
    for seed in range(3):
        args = (40, 0.5, 1, seed)  # 40 one-hop walks over 100 items: counts mostly 0-2
        visits = visit_counts_topm(graph, sources, 10, *args)
        dense = dense_visit_counts(graph, sources, *args)
        rows = _tied_selection(visits, dense)
        assert len(rows) >= 0.9 * len(sources)  # the cut falls inside a tie almost always
        for chosen, tied in rows:
            assert set(chosen) <= set(tied)
            chosen_idx.extend(chosen)
            rank_in_tie.append(np.searchsorted(tied, chosen).mean() / (len(tied) - 1))
    assert 42 <= np.mean(chosen_idx) <= 58  # middle of the catalogue
    assert 0.4 <= np.mean(rank_in_tie) <= 0.6  # middle of the tie


def test_tie_break_deterministic_thread_independent_and_seeded():
    graph = _star(301)
    sources = np.arange(301)
    args = (60, 0.5, 1)  # one-hop walks: counts 0-3, big ties at the top-20 cut in every row
    a = visit_counts_topm(graph, sources, 20, *args, seed=4)
    _assert_tables_equal(a, visit_counts_topm(graph, sources, 20, *args, seed=4))
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            _assert_tables_equal(visit_counts_topm(graph, sources, 20, *args, seed=4), a)
    finally:
        numba.set_num_threads(before)
    sub = np.array([300, 17, 17, 0])  # other block layouts / neighbours in the call: same rows
    _assert_tables_equal(visit_counts_topm(graph, sub, 20, *args, seed=4), VisitTable(a.items[sub], a.counts[sub]))
    # the reference ranking: count descending, then the tie key of (seed, source, item) descending
    dense = dense_visit_counts(graph, sources, *args, seed=4)
    keys = tie_keys(4, sources, np.arange(301))
    for k in range(0, 301, 30):
        order = np.lexsort((-keys[k], -dense[k]))[:20]
        np.testing.assert_array_equal(a.items[k], order)
    # a different seed breaks the same ties differently: keys differ for the same (source, items) ...
    other = tie_keys(5, sources, np.arange(301))
    assert np.mean(np.argsort(-keys, axis=1)[:, :20] == np.argsort(-other, axis=1)[:, :20]) < 0.05
    # ... and differ between sources (no shared order): top-20 overlaps of two sources' key rankings
    top = np.argsort(-keys, axis=1)[:, :20]
    overlap = [len(np.intersect1d(top[i], top[i + 1])) for i in range(300)]
    assert np.mean(overlap) < 3  # independent rankings: 20 * 20 / 301 = 1.3 expected
    # ... hence a different neighbourhood in tied rows even where the counts happen to agree
    b = visit_counts_topm(graph, sources, 20, *args, seed=5)
    assert not np.array_equal(a.items, b.items)


def test_tie_keys_are_a_seeded_bijection():
    items = np.concatenate([np.arange(5000), [2**31 - 1]])
    k = tie_keys(0, [3, 4], items)
    assert k.dtype == np.int64 and k.min() >= 0 and k.max() < 2**31
    assert len(np.unique(k[0])) == len(items) and len(np.unique(k[1])) == len(items)
    np.testing.assert_array_equal(k, tie_keys(0, [3, 4], items))
    assert not np.array_equal(k[0], k[1]) and not np.array_equal(k, tie_keys(1, [3, 4], items))
    # unrelated to the index: the key order of items 0..4999 is uncorrelated with their index
    assert abs(np.corrcoef(np.arange(5000), k[0, :5000])[0, 1]) < 0.05
    with pytest.raises(ValueError):
        tie_keys(0, [0], [-1])


def test_padding_weights_and_isolated_items():
    # items 0-2 share context 0 (each other's only neighbours); items 3-9 a bigger component;
    # item 10 has no edge at all
    items = np.array([0, 1, 2] + [3, 4, 5, 6, 7, 8, 9, 3, 5, 7, 9])
    contexts = np.array([0, 0, 0] + [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    graph = build_graph(items, contexts, 11, 4)
    top_t = 5
    neighbors, visits = random_walk_neighbors(graph, WalkConfig(walks_per_item=100, top_t=top_t,
                                                                seed=1))
    n_real = neighbors.mask.sum(axis=1)
    assert list(n_real[:3]) == [2, 2, 2]
    assert np.all(n_real[3:10] == top_t)
    assert n_real[10] == 0
    assert neighbors.items.dtype == np.int32 and neighbors.weights.dtype == np.float32
    assert np.all(neighbors.weights[~neighbors.mask] == 0)
    assert np.all(neighbors.items[~neighbors.mask] == 0)
    assert np.all(neighbors.weights[neighbors.mask] > 0)
    np.testing.assert_allclose(neighbors.weights[:10].sum(axis=1), 1.0, rtol=1e-6)
    assert neighbors.weights[10].sum() == 0
    assert set(neighbors.items[0, :2]) == {1, 2}
    assert np.all(visits.items[:3, 2:] == -1) and np.all(visits.counts[:3, 2:] == 0)
    assert np.all(visits.items[10] == -1)
    # weights are the counts, L1-normalised, best first
    w = visits.counts[3, :top_t] / visits.counts[3, :top_t].sum()
    np.testing.assert_allclose(neighbors.weights[3], w, rtol=1e-6)
    assert np.all(np.diff(neighbors.weights[3]) <= 0)


def test_hard_negative_depth_keeps_deeper_ranks():
    graph = _random_graph(400, 60, 3000, seed=6, weighted=False)
    config = WalkConfig(walks_per_item=100, top_t=8, seed=2)
    neighbors, visits = random_walk_neighbors(graph, config, hard_negative_depth=60)
    assert visits.items.shape == (400, 60) and neighbors.items.shape == (400, 8)
    shallow = visit_counts_topm(graph, np.arange(400), 8, 100, config.restart_prob,
                                config.max_walk_length, 2)
    _assert_tables_equal(VisitTable(visits.items[:, :8], visits.counts[:, :8]), shallow)
    again = neighbors_from_visits(visits, 8)
    np.testing.assert_array_equal(again.items, neighbors.items)
    assert (visits.items[:, 8:] >= 0).sum() > 0  # deeper ranks are really filled


def test_neighbors_parquet_roundtrip(tmp_path):
    graph = _random_graph(40, 10, 100, seed=7, weighted=True, isolated=2)
    neighbors, _ = random_walk_neighbors(graph, WalkConfig(walks_per_item=30, top_t=6))
    item_ids = np.array([f"movie-{i}" for i in range(40)])
    path = tmp_path / "out" / "neighbors.parquet"
    neighbors.save(path, item_ids)
    assert [p.name for p in path.parent.iterdir()] == ["neighbors.parquet"]  # no temp left over

    table = pq.read_table(path)
    assert table.column_names == ["item_id", "neighbors", "neighbor_ids", "weights"]
    assert table.schema.field("item_id").type == pa.string()
    assert table.schema.field("neighbors").type == pa.list_(pa.int32(), 6)
    assert table.schema.field("weights").type == pa.list_(pa.float32(), 6)
    assert table.schema.field("neighbor_ids").type == pa.list_(pa.string())
    ids = table.column("neighbor_ids").to_pylist()
    for i in range(40):
        assert ids[i] == list(item_ids[neighbors.items[i][neighbors.mask[i]]])
    assert ids[-1] == []

    loaded = Neighbors.load(path)
    np.testing.assert_array_equal(loaded.items, neighbors.items)
    np.testing.assert_array_equal(loaded.weights, neighbors.weights)
    np.testing.assert_array_equal(loaded.mask, neighbors.mask)
    assert loaded.items.dtype == np.int32 and loaded.weights.dtype == np.float32
    assert loaded.mask.dtype == bool


def test_invalid_arguments():
    graph = _random_graph(10, 4, 20, seed=8, weighted=False)
    with pytest.raises(ValueError):
        visit_counts_topm(graph, np.array([10]), 3, 10, 0.5, 4, 0)
    with pytest.raises(ValueError):
        visit_counts_topm(graph, np.arange(3), 3, 10, 1.5, 4, 0)
    with pytest.raises(ValueError):
        dense_visit_counts(graph, np.arange(3), 10, 0.5, 0, 0)
    bad = Neighbors(np.zeros((1, 3), np.int32), np.zeros((1, 3), np.float32),
                    np.array([[False, True, False]]))
    with pytest.raises(ValueError):
        bad.save("unused.parquet", np.array(["a"]))
