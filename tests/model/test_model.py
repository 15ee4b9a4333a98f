import numpy as np
import pytest
import torch

from pinsage.graph.neighbors import Neighbors
from pinsage.model.layers import PinSageConv
from pinsage.model.losses import max_margin_loss, sampled_softmax_loss
from pinsage.model.network import ModelConfig, PinSage
from pinsage.model.sampler import computation_graph, hard_negative_band, positive_pairs


def test_conv_matches_the_paper_equations():
    torch.manual_seed(0)
    conv = PinSageConv(3, 4, 5)
    h = torch.randn(6, 3)
    neighbors = torch.tensor([[1, 2], [0, 0]])
    weights = torch.tensor([[0.75, 0.25], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    z = conv(h, 2, neighbors, weights, mask)
    m = torch.relu(h @ conv.Q.weight.T + conv.Q.bias)
    n0 = 0.75 * m[1] + 0.25 * m[2]
    z0 = torch.relu(conv.W(torch.cat([h[0], n0])))
    assert torch.allclose(z[0], z0 / z0.norm(), atol=1e-6)
    z1 = torch.relu(conv.W(torch.cat([h[1], m[0]])))
    assert torch.allclose(z[1], z1 / z1.norm(), atol=1e-6)


def test_mean_aggregator_ignores_weights_and_padding():
    conv = PinSageConv(3, 4, 5, aggregator="mean")
    w = conv.pool_weights(torch.tensor([[0.9, 0.1, 0.0]]), torch.tensor([[True, True, False]]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.5, 0.0]]))
    with pytest.raises(ValueError):
        PinSageConv(3, 4, 5, aggregator="max")


def test_max_margin_loss_hand_computed():
    zq = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zi = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # positive scores 0.6 and 1.0
    zn = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # shared negatives
    # query 0: negatives score 1.0, 0.0 -> hinge max(0, 1-0.6+0.1)=0.5, max(0, 0-0.6+0.1)=0
    # query 1: negatives score 0.0, -1.0 -> hinge max(0, 0-1+0.1)=0, 0
    loss = max_margin_loss(zq, zi, zn, margin=0.1)
    assert loss.item() == pytest.approx(0.5 / 4)
    # masking the first negative for query 0 (it is its positive) leaves 3 terms, all zero
    mask = torch.tensor([[False, True], [True, True]])
    assert max_margin_loss(zq, zi, zn, 0.1, negative_mask=mask).item() == pytest.approx(0.0)
    # one hard negative per query: scores 0.5 for query 0 -> hinge 0.0; 0.9 for query 1 -> hinge 0.0
    zh = torch.tensor([[[0.5, 0.0]], [[0.0, 0.95]]])
    loss_h = max_margin_loss(zq, zi, zn, 0.1, z_hard=zh)
    assert loss_h.item() == pytest.approx((0.5 + 0.0 + 0.05) / 6)


def test_sampled_softmax_loss_hand_computed():
    zq = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zi = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # positive scores 0.6 and 1.0
    zn = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # negative scores (1.0, 0.0) and (0.0, -1.0)
    tau = 0.5

    def nll(pos, negs):
        logits = np.array([pos] + negs) / tau
        return -(logits[0] - np.log(np.exp(logits).sum()))

    loss = sampled_softmax_loss(zq, zi, zn, tau)
    assert loss.item() == pytest.approx((nll(0.6, [1.0, 0.0]) + nll(1.0, [0.0, -1.0])) / 2, rel=1e-5)
    # a masked negative drops out of the normaliser
    mask = torch.tensor([[False, True], [True, True]])
    masked = sampled_softmax_loss(zq, zi, zn, tau, negative_mask=mask)
    assert masked.item() == pytest.approx((nll(0.6, [0.0]) + nll(1.0, [0.0, -1.0])) / 2, rel=1e-5)
    # hard negatives join the same normaliser
    zh = torch.tensor([[[0.5, 0.0]], [[0.0, 0.95]]])
    hard = sampled_softmax_loss(zq, zi, zn, tau, z_hard=zh)
    assert hard.item() == pytest.approx((nll(0.6, [1.0, 0.0, 0.5]) + nll(1.0, [0.0, -1.0, 0.95])) / 2, rel=1e-5)
    # the loss falls as the positive's score rises: it is a real training signal
    assert sampled_softmax_loss(zq, zq, zn, tau).item() < loss.item()


def _chain_neighbors(n: int, t: int) -> Neighbors:
    items = np.stack([(np.arange(n) + k + 1) % n for k in range(t)], axis=1).astype(np.int32)
    weights = np.full((n, t), 1.0 / t, dtype=np.float32)
    mask = np.ones((n, t), dtype=bool)
    mask[0, 1:] = False  # item 0 has a single neighbour
    weights[0] = [1.0] + [0.0] * (t - 1)
    return Neighbors(items, weights, mask)


def test_computation_graph_dedups_and_prefixes_targets():
    nbrs = _chain_neighbors(10, 2)
    nodes, blocks = computation_graph(np.array([3, 7]), nbrs, 2)
    assert len(blocks) == 2
    assert blocks[-1].n_dst == 2
    assert list(nodes[:2]) == [3, 7]
    assert len(np.unique(nodes)) == len(nodes)
    # every neighbour reference resolves to the right catalogue item
    layer1 = nodes[:blocks[1].neighbors.max() + 1]
    for row, target in enumerate([3, 7]):
        got = nodes[blocks[1].neighbors[row]]
        assert list(got) == list(nbrs.items[target])
    # the layer-1 nodes are the targets and their neighbours, nothing else (item 3 -> 4, 5; 7 -> 8, 9)
    assert sorted(layer1) == [3, 4, 5, 7, 8, 9]


def test_positive_pairs_stay_in_window_and_context():
    ctx = np.array([0, 0, 0, 0, 1, 1, 2])
    items = np.array([10, 11, 12, 13, 20, 21, 30])
    rng = np.random.default_rng(0)
    for _ in range(20):
        pairs = positive_pairs(ctx, items, 1, True, rng)
        for q, i in pairs:
            assert abs(q - i) == 1 and q // 10 == i // 10  # adjacent within its context
        assert 30 not in pairs  # a context of one item gives no pair
    unordered = positive_pairs(ctx, items, 1, False, rng)
    assert all(q != i and q // 10 == i // 10 for q, i in unordered)


def test_hard_negative_band_scales_and_caps():
    assert hard_negative_band(10_000) == (200, 500)
    assert hard_negative_band(3_000_000_000) == (2000, 5000)
    lo, hi = hard_negative_band(10)
    assert 1 <= lo < hi
    # walks that can visit at most 1,600 distinct items per source: the band moves inside that reach
    assert hard_negative_band(500_000, reach=1600) == (800, 1600)
    assert hard_negative_band(10_000, reach=1600) == (200, 500)  # within reach: unchanged


def test_visit_table_depth_is_capped_by_what_the_walks_can_reach():
    from pinsage.model.sampler import hard_negative_depth
    from pinsage.run.config import PipelineConfig

    cfg = PipelineConfig()
    reach = cfg.walks.walks_per_item * cfg.walks.max_walk_length
    assert hard_negative_depth(500_000, cfg.walks, cfg.train.sampler) == reach < 5000  # no N x 5000 padding
    assert hard_negative_depth(9_742, cfg.walks, cfg.train.sampler) == hard_negative_band(9_742)[1]


def test_model_zero_layers_is_the_mlp_on_inputs():
    cfg = ModelConfig(input_dim=4, n_items=5, hidden_dim=8, output_dim=3, n_layers=0)
    model = PinSage(cfg)
    x = torch.randn(5, 4)
    z = model(x, torch.arange(5), [])
    assert z.shape == (5, 3)
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(model.id_embedding.weight, torch.zeros(5, 8))  # zero-initialised


def test_negative_candidates_are_the_trained_items_or_the_catalogue():
    from pinsage.model.sampler import SamplerConfig, negative_candidates

    degree = np.array([0, 1, 4, 0, 9])
    assert np.array_equal(negative_candidates(degree, SamplerConfig()), [1, 2, 4])  # default: seen in training
    assert np.array_equal(negative_candidates(degree, SamplerConfig(negatives_from="catalogue")), np.arange(5))
    with pytest.raises(ValueError):
        negative_candidates(degree, SamplerConfig(negatives_from="popular"))


def test_computation_graph_is_the_same_on_its_dense_and_its_sorting_path():
    from pinsage.graph.neighbors import Neighbors

    rng = np.random.default_rng(3)
    n, t = 300, 6
    mask = rng.random((n, t)) < 0.8
    mask.sort(axis=1)
    mask = mask[:, ::-1].copy()  # real neighbours are a prefix of each row
    small = Neighbors(rng.integers(0, n, (n, t)).astype(np.int32), rng.random((n, t)).astype(np.float32), mask)
    pad = 100_000  # isolated items appended: the catalogue dwarfs the batch, so the sorting path runs
    big = Neighbors(np.vstack([small.items, np.zeros((pad, t), np.int32)]),
                    np.vstack([small.weights, np.zeros((pad, t), np.float32)]),
                    np.vstack([small.mask, np.zeros((pad, t), bool)]))
    targets = np.unique(rng.integers(0, n, 40))
    nodes_a, blocks_a = computation_graph(targets, small, 2)
    nodes_b, blocks_b = computation_graph(targets, big, 2)
    assert np.array_equal(nodes_a, nodes_b) and np.array_equal(nodes_a[:len(targets)], targets)
    for a, b in zip(blocks_a, blocks_b):
        assert a.n_dst == b.n_dst
        assert np.array_equal(a.neighbors, b.neighbors) and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.weights, b.weights)
