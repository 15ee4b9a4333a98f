"""Training's two computation paths and its stopping rule."""

import numpy as np
import pytest
import torch

from pinsage.graph.neighbors import Neighbors
from pinsage.model.losses import sampled_softmax_loss
from pinsage.model.network import ModelConfig, build_model
from pinsage.model.sampler import MinibatchProducer, SamplerConfig, full_pass_pays, reachable_items
from pinsage.model.train import TrainConfig, TrainData, TrainState, producer_processes, stop_reason, train_model


def random_graph(n=200, t=6, f=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.sort(rng.random((n, t)) < 0.7, axis=1)[:, ::-1].copy()  # real neighbours first
    mask[:20] = False  # some items without neighbours
    weights = rng.random((n, t)).astype(np.float32) * mask
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    nbrs = Neighbors(rng.integers(0, n, (n, t)).astype(np.int32), weights.astype(np.float32), mask)
    return nbrs, rng.normal(size=(n, f)).astype(np.float32), rng.integers(0, n, (400, 2)).astype(np.int64)


def batch_loss(model, batch):
    z = model(batch.x, batch.item_index, batch.blocks)  # (N_targets, D)
    return sampled_softmax_loss(z[batch.query], z[batch.positive], z[batch.negative], 0.05, z_hard=z[batch.hard],
                                negative_mask=batch.negative_item[None, :] != batch.positive_item[:, None],
                                hard_mask=batch.hard_item != batch.positive_item[:, None])


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_full_catalogue_graph_gives_the_sampled_loss_and_gradients(layers):
    nbrs, feats, pairs = random_graph(n=2000, t=2)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=16, output_dim=8, n_layers=layers), feats)
    with torch.no_grad():  # non-zero id vectors, so a wrong row would show
        model.id_embedding.weight.normal_()
    visits = None
    cfg = SamplerConfig(batch_size=16, n_shared_negatives=10)
    # items 0..19 have no neighbours and are no negative candidates: the full pass leaves out those
    # that are nobody's neighbour either
    pairs, candidates = pairs[(pairs >= 20).all(axis=1)], np.arange(20, len(feats))
    unreachable = np.setdiff1d(np.arange(20), nbrs.items[nbrs.mask])
    assert len(unreachable)
    losses, grads = [], []
    for full in (False, True):
        reachable = reachable_items(nbrs, candidates)
        assert np.array_equal(reachable, np.setdiff1d(np.arange(len(feats)), unreachable))
        producer = MinibatchProducer(pairs, feats, nbrs, visits, cfg, 0, 0, candidates, layers,
                                     full=reachable if full else None)
        batch = producer.make_batch(2)
        if full and layers:  # every reachable item computed below the output layer
            assert np.array_equal(np.sort(batch.item_index.numpy()), reachable)
        model.zero_grad()
        loss = batch_loss(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    # and the two paths are not trivially the same graph
    sampled = MinibatchProducer(pairs, feats, nbrs, visits, cfg, 0, 0, candidates, layers)
    if layers:
        assert len(sampled.make_batch(2).item_index) < len(feats)


def test_the_switch_is_a_sampled_batch_reaching_nine_tenths_of_the_reachable_items():
    assert full_pass_pays(9000, 10_000) and not full_pass_pays(8999, 10_000)
    nbrs, feats, pairs = random_graph(n=2000, t=4)
    small = MinibatchProducer(pairs, feats, nbrs, None, SamplerConfig(batch_size=4, n_shared_negatives=2), 0, 0,
                              np.arange(len(feats)), 2)
    large = MinibatchProducer(pairs, feats, nbrs, None, SamplerConfig(batch_size=400, n_shared_negatives=200), 0, 0,
                              np.arange(len(feats)), 2)
    assert not full_pass_pays(len(small.make_batch(0).item_index), len(feats))
    assert full_pass_pays(len(large.make_batch(0).item_index), len(feats))


def scripted_training(scores, config):
    """Train a tiny model with a validation score read from ``scores`` epoch after epoch."""
    nbrs, feats, pairs = random_graph(n=60)
    data = TrainData(lambda epoch: pairs[:64], feats, nbrs, None, np.arange(len(feats)))
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=8, output_dim=4, n_layers=1), feats)
    it = iter(scores)
    logs = []
    _, state = train_model(model, data, config, evaluate_fn=lambda m: next(it), log=logs.append)
    return state, logs


def tiny(**kw):
    return TrainConfig(device="cpu", num_workers=0, warmup_steps=1,
                       sampler=SamplerConfig(batch_size=32, n_shared_negatives=8), **kw)


def test_training_stops_on_patience_and_keeps_the_best_epoch():
    # gains of 10%, then 0.5% (below min_gain: the best moves, patience does not restart), then nothing
    scores = [0.10, 0.11, 0.1105, 0.109, 0.108, 0.5]
    state, logs = scripted_training(scores, tiny(epochs=20, patience=3, min_gain=0.01))
    assert state.epoch == 5 and state.best_epoch == 3 and state.gain_epoch == 2
    assert state.stopped["reason"] == "patience" and state.stopped["epoch"] == 5
    assert "kept epoch 3" in logs[-1]


def test_training_stops_on_the_budget_when_it_still_gains():
    state, _ = scripted_training([0.1, 0.2, 0.3, 0.4, 0.5], tiny(epochs=4, patience=3))
    assert state.epoch == 4 and state.best_epoch == 4 and state.stopped["reason"] == "budget"


def test_stop_rule_without_patience_and_on_resume():
    config = TrainConfig(epochs=5, patience=0)
    assert stop_reason(TrainState(4, 0, 0.1, 1, [], gain_epoch=1), config) is None  # patience off
    assert stop_reason(TrainState(5, 0, 0.1, 1, [], gain_epoch=1), config)["reason"] == "budget"
    # a run resumed after it had stopped on patience stops again at once
    resumed = TrainState(4, 0, 0.1, 1, [], gain_epoch=1)
    assert stop_reason(resumed, TrainConfig(epochs=9, patience=3))["reason"] == "patience"


def test_producers_auto_samples_inline_on_the_cpu_and_feeds_a_gpu_from_one_process():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert producer_processes(TrainConfig(), cpu) == 0
    assert producer_processes(TrainConfig(), gpu) == 1
    assert producer_processes(TrainConfig(num_workers=2), cpu) == 2
    assert producer_processes(TrainConfig(num_workers=0), gpu) == 0
    with pytest.raises(ValueError, match="num_workers must be >= 0, or -1"):
        producer_processes(TrainConfig(num_workers=-2), cpu)


def test_learning_rate_warms_up_linearly_then_decays_per_epoch():
    from pinsage.model.train import learning_rate_at

    cfg = TrainConfig(learning_rate=0.01, warmup_steps=10, decay_per_epoch=0.5)
    assert learning_rate_at(0, 100, cfg) == pytest.approx(0.001)
    assert learning_rate_at(4, 100, cfg) == pytest.approx(0.005)
    assert learning_rate_at(9, 100, cfg) == pytest.approx(0.01)  # the peak at the end of the warm-up
    assert learning_rate_at(10, 100, cfg) == pytest.approx(0.01)
    assert learning_rate_at(60, 100, cfg) == pytest.approx(0.01 * 0.5 ** 0.5)  # half an epoch after it
    assert learning_rate_at(210, 100, cfg) == pytest.approx(0.01 * 0.25)  # two epochs after it


def test_hard_negatives_grow_by_one_per_epoch_up_to_the_cap_from_the_visit_rank_band():
    from pinsage.graph.neighbors import VisitTable
    from pinsage.model.sampler import hard_negative_band

    n = 200
    lo, hi = hard_negative_band(n)
    assert (lo, hi) == (4, 10)  # 2%-5% of the catalogue
    ranks = np.arange(12)
    visits = VisitTable(items=((np.arange(n)[:, None] + 1 + ranks[None, :]) % n).astype(np.int32),
                        counts=np.broadcast_to(100 - ranks, (n, 12)).astype(np.int32))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 4)).astype(np.float32)
    nbrs = Neighbors(items=rng.integers(0, n, size=(n, 2)).astype(np.int32),
                     weights=np.full((n, 2), 0.5, dtype=np.float32), mask=np.ones((n, 2), dtype=bool))
    pairs = np.stack([np.arange(n), (np.arange(n) + 1) % n], axis=1).astype(np.int64)
    cfg = SamplerConfig(batch_size=50, n_shared_negatives=10, max_hard_negatives=3)
    seen = []
    for epoch in range(6):
        batch = MinibatchProducer(pairs, features, nbrs, visits, cfg, epoch, 0, np.arange(n), 1).make_batch(0)
        hard, queries = batch.hard_item.numpy(), batch.positive_item.numpy() - 1  # positive = query + 1
        seen.append(hard.shape[1])
        # each one from its own query's visit ranks lo..hi-1: items query + 1 + lo .. query + hi
        offset = (hard - queries[:, None]) % n
        assert np.all((offset >= 1 + lo) & (offset <= hi)), epoch
    assert seen == [0, 1, 2, 3, 3, 3]  # epoch e (1-based) adds e - 1, capped at max_hard_negatives
    off = SamplerConfig(batch_size=50, n_shared_negatives=10, hard_negatives=False)
    batch = MinibatchProducer(pairs, features, nbrs, visits, off, 4, 0, np.arange(n), 1).make_batch(0)
    assert batch.hard_item.shape[1] == 0


def _twins(nbrs, feats, seed=1):
    """Cold twins whose content neighbourhoods are another random table (items 20.. only)."""
    from pinsage.model.coldtwins import ColdTwins

    other, _, _ = random_graph(n=len(feats), t=nbrs.top_t, f=feats.shape[1], seed=seed)
    other.items[:] = np.maximum(other.items, 20)  # content neighbours are trained items
    return ColdTwins(other, degree_column=feats.shape[1] - 1, unknown_degree=0.5)


@pytest.mark.parametrize("layers", [1, 2])
def test_cold_twins_enter_both_computation_paths_alike(layers):
    nbrs, feats, pairs = random_graph(n=2000, t=2)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=16, output_dim=8, n_layers=layers), feats)
    with torch.no_grad():
        model.id_embedding.weight.normal_()
    cfg = SamplerConfig(batch_size=64, n_shared_negatives=10, cold_share=0.5)
    pairs, candidates = pairs[(pairs >= 20).all(axis=1)], np.arange(20, len(feats))
    cold = _twins(nbrs, feats)
    losses = []
    for full in (None, reachable_items(nbrs, candidates)):
        batch = MinibatchProducer(pairs, feats, nbrs, None, cfg, 0, 0, candidates, layers, full=full,
                                  cold=cold).make_batch(0)
        losses.append(batch_loss(model, batch).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)


def test_a_cold_twin_has_no_id_an_unknown_degree_and_its_content_neighbourhood():
    nbrs, feats, pairs = random_graph(n=300, t=4)
    pairs = pairs[(pairs >= 20).all(axis=1)]
    cold = _twins(nbrs, feats)
    cfg = SamplerConfig(batch_size=len(pairs), n_shared_negatives=5, hard_negatives=False, cold_share=0.5)
    producer = MinibatchProducer(pairs, feats, nbrs, None, cfg, 0, 7, np.arange(20, 300), 1, cold=cold)
    batch = producer.make_batch(0)
    nodes = batch.item_index.numpy()
    twin = nodes < 0
    # about half the pairs have a twin, one side each; its positive_item stays the real item (masking)
    n_cold = int((batch.item_index[batch.query] < 0).sum() + (batch.item_index[batch.positive] < 0).sum())
    assert 0.35 * len(pairs) < n_cold < 0.65 * len(pairs)
    assert not ((batch.item_index[batch.query] < 0) & (batch.item_index[batch.positive] < 0)).any()
    assert (batch.positive_item >= 0).all()
    x = batch.x.numpy()
    assert np.all(x[twin, -1] == 0.5) and not np.allclose(x[~twin, -1], 0.5)
    # a twin's block row lists its content neighbours (real items), with their weights
    blk = batch.blocks[0]
    rows = np.flatnonzero(twin[:blk.n_dst])
    assert len(rows)
    twin_of = {}
    wanted = np.concatenate([pairs[:, 0], pairs[:, 1]])
    for r in rows:  # recover the twin's real item from its features (rows of feats are distinct)
        real = int(np.flatnonzero((feats[:, :-1] == x[r, :-1]).all(axis=1))[0])
        twin_of[r] = real
        m = blk.mask[r].numpy()
        got = nodes[blk.neighbors[r].numpy()[m]]
        assert np.array_equal(got, cold.neighbors.items[real][cold.neighbors.mask[real]])
        assert np.allclose(blk.weights[r].numpy()[m], cold.neighbors.weights[real][cold.neighbors.mask[real]])
    assert set(twin_of.values()) <= set(wanted)
    # without twins the producer draws the same stream as before twins existed
    plain = MinibatchProducer(pairs, feats, nbrs, None, SamplerConfig(batch_size=len(pairs), n_shared_negatives=5,
                              hard_negatives=False, cold_share=0.0), 0, 7, np.arange(20, 300), 1, cold=cold)
    assert (plain.make_batch(0).item_index >= 0).all()


def test_a_cold_twin_gets_no_id_vector_in_the_model():
    _, feats, _ = random_graph(n=50, t=3)
    model = build_model(ModelConfig(hidden_dim=8, output_dim=4, n_layers=0), feats)
    with torch.no_grad():
        model.id_embedding.weight.normal_()
    x = torch.from_numpy(feats[:4])
    warm = model.embed_input(x, torch.arange(4))
    cold = model.embed_input(x, torch.tensor([-1, -1, 2, -1]))
    assert torch.allclose(cold[2], warm[2])
    assert torch.allclose(cold[[0, 1, 3]], model.project((x[[0, 1, 3]] - model.feature_mean) / model.feature_std))


def test_cold_twins_see_up_to_three_of_their_interactions_then_their_look_alikes():
    """``cold_twins``: never the item itself; a twin's neighbourhood starts with items engaged beside
    some of its own interactions (for about 3 in 4 items) and is filled with content neighbours."""
    import pyarrow as pa

    from pinsage.model.coldtwins import cold_twins
    from pinsage.util.io import vector_column

    rng = np.random.default_rng(0)
    n, t = 60, 4
    contexts = [rng.choice(n, 8, replace=False) for _ in range(80)]
    context = np.repeat(np.arange(80), 8)
    item = np.concatenate(contexts).astype(np.int64)
    walks = Neighbors(rng.integers(0, n, (n, t)).astype(np.int32), np.full((n, t), 0.25, np.float32),
                      np.ones((n, t), bool))
    table = pa.table({"item_id": [f"i{k}" for k in range(n)],
                      "annotation": vector_column(rng.normal(size=(n, 8)).astype(np.float32)),
                      "log_degree": np.log1p(np.bincount(item, minlength=n)).astype(np.float32)})
    twins = cold_twins(table, walks, context, item, window=1, ordered=True, seed=0)
    nb = twins.neighbors
    assert nb.mask.all() and not (nb.items == np.arange(n)[:, None]).any()
    assert twins.degree_column == 8 and twins.unknown_degree == pytest.approx(table["log_degree"].to_numpy().mean())
    beside = {k: set() for k in range(n)}
    for c in contexts:
        for a, b in zip(c[:-1], c[1:]):
            beside[a].add(b)
            beside[b].add(a)
    first_beside = np.mean([int(nb.items[k, 0]) in beside[k] for k in range(n)])
    assert 0.5 < first_beside < 0.95  # r = 0 for about a quarter of the items: content only
