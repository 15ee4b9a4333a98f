"""Hold-out training neighbourhoods: a minibatch's computation graph never comes from a walk through
the contexts its positive pairs were drawn from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pinsage.graph import build_graph, without_contexts
from pinsage.sampler import MinibatchProducer, SamplerConfig, positive_pairs
from pinsage.walks import Neighbors, WalkConfig, context_folds, random_walk_neighbors


def test_without_contexts_drops_exactly_their_edges():
    items = np.array([0, 1, 2, 1, 3, 0, 4])
    contexts = np.array([0, 0, 1, 1, 2, 2, 2])
    weights = np.arange(1, 8, dtype=np.float32)
    g = build_graph(items, contexts, 5, 3, weights)
    h = without_contexts(g, np.array([False, True, False]))
    assert (h.n_items, h.n_contexts) == (5, 3)
    kept = sorted(zip(np.repeat(np.arange(5), h.item_degree()), h.item_contexts, h.item_weights))
    assert kept == sorted((i, c, w) for i, c, w in zip(items, contexts, weights) if c != 1)
    assert h.context_degree().tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match="one entry per context"):
        without_contexts(g, np.zeros(2, dtype=bool))


def test_context_folds_are_balanced_seeded_and_complete():
    folds = context_folds(103, 4, seed=5)
    assert sorted(np.bincount(folds).tolist()) == [25, 26, 26, 26]
    assert np.array_equal(folds, context_folds(103, 4, seed=5))
    assert not np.array_equal(folds, context_folds(103, 4, seed=6))
    with pytest.raises(ValueError):
        context_folds(10, 0, seed=0)


def test_positive_pairs_carry_their_context():
    context = np.repeat(np.arange(6), 5)
    item = np.arange(30) % 11
    pairs = positive_pairs(context, item, window=2, ordered=True, rng=np.random.default_rng(0), with_context=True)
    assert pairs.shape[1] == 3
    rows = {(c, i) for c, i in zip(context, item)}
    assert all((c, q) in rows and (c, p) in rows for q, p, c in pairs)


def _fold_setup(n_folds=3):
    # 12 contexts of 6 items each over 30 items; every item sits in 2-3 contexts
    rng = np.random.default_rng(0)
    context = np.repeat(np.arange(12), 6)
    item = np.concatenate([rng.choice(30, 6, replace=False) for _ in range(12)])
    g = build_graph(item, context, 30, 12)
    fold_of = context_folds(12, n_folds, seed=0)
    cfg = WalkConfig(walks_per_item=50, top_t=5)
    full, _ = random_walk_neighbors(g, cfg)
    tables = [random_walk_neighbors(without_contexts(g, fold_of == f), cfg)[0] for f in range(n_folds)]
    pairs = positive_pairs(context, item, 2, True, np.random.default_rng(1), with_context=True)
    pairs[:, 2] = fold_of[pairs[:, 2]]
    return g, fold_of, full, tables, pairs, context, item


def test_minibatches_hold_one_fold_and_use_its_table():
    g, fold_of, full, tables, pairs, context, item = _fold_setup()
    feats = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    producer = MinibatchProducer(pairs, feats, full, None, SamplerConfig(batch_size=7, n_shared_negatives=3),
                                 epoch=0, seed=0, candidate_items=np.arange(30), n_layers=1,
                                 fold_neighbors=tables)
    seen = []
    for b in range(len(producer)):
        start, stop = producer.batch_bounds[b]
        chunk = pairs[producer.order[start:stop]]
        assert len(set(chunk[:, 2])) == 1  # one fold per minibatch
        fold = int(chunk[0, 2])
        batch = producer.make_batch(b)
        block = batch["blocks"][0]
        nodes = batch["item_index"].numpy()
        for row in range(block.n_dst):  # every destination's neighbours are its fold table's
            node = nodes[row]
            real = block.mask[row].numpy()
            got = nodes[block.neighbors[row].numpy()[real]]
            assert got.tolist() == tables[fold].items[node][tables[fold].mask[node]].tolist()
        seen.append(chunk)
    seen = np.concatenate(seen)
    assert sorted(map(tuple, seen)) == sorted(map(tuple, pairs))  # each pair once per epoch


def test_fold_tables_never_walk_through_the_pairs_own_contexts():
    g, fold_of, full, tables, pairs, context, item = _fold_setup()
    for f, table in enumerate(tables):
        reachable_without = without_contexts(g, fold_of == f)
        # an item whose every context is in fold f has no neighbourhood in table f
        deg = reachable_without.item_degree()
        assert not table.mask[deg == 0].any()
        assert table.mask[deg > 0].any(axis=1).all()
    # and the served table, walked over every context, differs from each hold-out table
    assert all(not np.array_equal(full.items, t.items) for t in tables)


def test_pipeline_trains_on_the_holdout_tables_and_serves_the_full_one(tmp_path):
    from conftest import make_community_dataset
    from test_pipeline import small_config

    from pinsage import pipeline

    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=60)
    cfg = small_config(data, tmp_path / "out", epochs=1)
    cfg.walks.holdout_folds = 3
    for stage in ("prepare", "graph", "features", "neighbors"):
        pipeline.STAGES[stage](cfg, log=lambda s: None)
    d = tmp_path / "out" / "neighbors"
    assert sorted(f.name for f in d.glob("holdout_fold*.parquet")) == [f"holdout_fold{f}.parquet" for f in range(3)]
    tables, fold_of = pipeline.holdout_neighbors(cfg)
    full = Neighbors.load(d / "neighbors.parquet")
    # each hold-out table misses the walks through a third of the contexts, the served one has them all
    assert all(t.mask.sum() <= full.mask.sum() for t in tables) and np.bincount(fold_of).tolist() == [20, 20, 20]
    pipeline.train(cfg, log=lambda s: None)
    pipeline.export(cfg, log=lambda s: None)
    pipeline.evaluate(cfg, log=lambda s: None)
    history = json.loads((tmp_path / "out" / "train" / "history.json").read_text())
    assert history["epochs"][0]["examples"] > 0


def test_cli_flag_sets_the_folds():
    import argparse

    from pinsage.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args([]), "out").walks.holdout_folds == 0  # the paper's default
    assert config_from_args(parser.parse_args(["--holdout-folds", "4"]), "out").walks.holdout_folds == 4
