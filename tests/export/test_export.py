import numpy as np
import torch

from pinsage.export.embed import export_embeddings, per_item_embeddings
from pinsage.export.embeddings import read_embeddings, write_embeddings
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import ModelConfig, PinSage


def _random_neighbors(n, t, rng):
    items = rng.integers(0, n, size=(n, t)).astype(np.int32)
    items = np.where(items == np.arange(n)[:, None], (items + 1) % n, items)
    mask = rng.random((n, t)) < 0.8
    mask[:, 0] = True
    mask[5] = False  # an isolated item
    w = rng.random((n, t)).astype(np.float32) * mask
    w = np.where(w.sum(1, keepdims=True) > 0, w / np.maximum(w.sum(1, keepdims=True), 1e-12), 0).astype(np.float32)
    return Neighbors(np.where(mask, items, 0).astype(np.int32), w, mask)


def test_mapreduce_export_equals_per_item_inference():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    n, t = 120, 6
    feats = rng.normal(size=(n, 7)).astype(np.float32)
    nbrs = _random_neighbors(n, t, rng)
    for aggregator, skip in (("importance", False), ("mean", False), ("importance", True)):
        model = PinSage(ModelConfig(input_dim=7, n_items=n, hidden_dim=16, output_dim=8, n_layers=2,
                                    aggregator=aggregator, input_skip=skip), feats.mean(0), feats.std(0))
        torch.nn.init.normal_(model.id_embedding.weight, std=0.1)  # as after training
        exported = export_embeddings(model, feats, nbrs, chunk_size=17)  # chunks that do not divide n
        single = per_item_embeddings(model, feats, nbrs, np.arange(n), batch_size=1)
        batched = per_item_embeddings(model, feats, nbrs, np.arange(n), batch_size=32)
        assert np.abs(exported - single).max() < 1e-5
        assert np.abs(exported - batched).max() < 1e-5


def test_embedding_shards_roundtrip(tmp_path):
    ids = np.array([f"item{i}" for i in range(25)])
    emb = np.random.default_rng(1).normal(size=(25, 4)).astype(np.float32)
    parts = write_embeddings(tmp_path / "emb", ids, emb, rows_per_part=10)
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    got_ids, got = read_embeddings(tmp_path / "emb")
    assert list(got_ids) == list(ids)
    assert np.array_equal(got, emb)
    # a rewrite replaces the whole directory: no stale shard survives
    write_embeddings(tmp_path / "emb", ids[:5], emb[:5], rows_per_part=10)
    assert len(list((tmp_path / "emb").glob("part-*.parquet"))) == 1
