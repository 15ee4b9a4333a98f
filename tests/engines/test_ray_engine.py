"""The ``ray`` engine against the ``local`` one, on a local Ray the test starts (real processes)."""

from __future__ import annotations

import numpy as np
import pytest
import ray  # noqa: F401  (pinned in requirements.txt: without Ray this module fails, it is not skipped)
from graph.test_walks import _random_graph

from pinsage.engines.ray_session import ray_session, shard_bounds
from pinsage.engines.ray_walks import random_walk_neighbors_ray
from pinsage.graph.walks import WalkConfig, random_walk_neighbors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    with ray_session(num_cpus=2):
        yield


def test_shard_bounds_cover_every_item_once():
    for n, k in ((10, 3), (7, 7), (5, 9), (0, 4), (1000, 16)):
        bounds = shard_bounds(n, k)
        covered = np.concatenate([np.arange(a, b) for a, b in bounds]) if n else np.zeros(0)
        assert np.array_equal(covered, np.arange(n))
        assert all(b > a for a, b in bounds) or n == 0


@pytest.mark.parametrize("weighted", [False, True])
def test_ray_neighbours_equal_local(local_ray, weighted):
    graph = _random_graph(600, 150, 3000, seed=3, weighted=weighted, isolated=5)
    cfg = WalkConfig(walks_per_item=50, top_t=10, seed=11)
    local_nbrs, local_visits = random_walk_neighbors(graph, cfg, hard_negative_depth=40)
    stats = {}
    nbrs, visits = random_walk_neighbors_ray(graph, cfg, hard_negative_depth=40, n_shards=7, stats=stats)
    assert stats["n_shards"] == 7
    # every task read the graph from Ray's shared object store, never a private copy
    assert stats["zero_copy"]
    np.testing.assert_array_equal(visits.items, local_visits.items)
    np.testing.assert_array_equal(visits.counts, local_visits.counts)
    np.testing.assert_array_equal(nbrs.items, local_nbrs.items)
    np.testing.assert_array_equal(nbrs.weights, local_nbrs.weights)
    np.testing.assert_array_equal(nbrs.mask, local_nbrs.mask)
    assert nbrs.mask[:-5].any(axis=1).all() and not nbrs.mask[-5:].any()  # isolated items stay empty


@pytest.mark.parametrize("partitions", [1, 2, 7])
def test_ray_export_equals_local(local_ray, partitions):
    import torch

    from pinsage.engines.ray_export import export_embeddings_ray
    from pinsage.export.embed import export_embeddings
    from pinsage.graph.neighbors import neighbors_from_visits
    from pinsage.graph.walks import visit_counts_topm
    from pinsage.model.network import ModelConfig, PinSage

    graph = _random_graph(120, 40, 500, seed=5, weighted=False, isolated=3)
    visits = visit_counts_topm(graph, np.arange(graph.n_items), 6, 30, 0.5, 8, 0)
    nbrs = neighbors_from_visits(visits, 6)
    feats = np.random.default_rng(0).normal(size=(graph.n_items, 7)).astype(np.float32)
    torch.manual_seed(0)
    model = PinSage(ModelConfig(input_dim=7, n_items=graph.n_items, hidden_dim=8, output_dim=5, n_layers=2))
    with torch.no_grad():  # id embeddings start at zero: give them values so they are exercised
        model.id_embedding.weight.normal_()
    local = export_embeddings(model, feats, nbrs)
    distributed = export_embeddings_ray(model, feats, nbrs, num_partitions=partitions)
    assert np.abs(local).sum() > 0 and not nbrs.mask[-3:].any()  # isolated items are part of the check
    np.testing.assert_allclose(distributed, local, atol=1e-5)
