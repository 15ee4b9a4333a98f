"""The popularity prior: score(q, i) = z_q . z_i + w log(1 + d_i), w chosen on validation after
training, carried by the embeddings table and searched exactly by the index; and the loss's
per-candidate offsets (the logQ correction of mixed negatives)."""

import json

import numpy as np
import pytest
import torch

from pinsage.eval.metrics import embedding_scorer
from pinsage.export.embed import choose_prior_weight, item_prior
from pinsage.export.embeddings import read_embeddings, read_prior, write_embeddings
from pinsage.export.index import IndexConfig, build_index, search
from pinsage.graph.neighbors import Neighbors
from pinsage.model.losses import max_margin_loss, sampled_softmax_loss
from pinsage.model.network import ModelConfig, PinSage, load_model, save_model


def unit(rng, n, d):
    z = rng.normal(size=(n, d)).astype(np.float32)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_softmax_bias_is_added_to_each_candidates_logit():
    rng = np.random.default_rng(0)
    zq, zp = torch.from_numpy(unit(rng, 4, 8)), torch.from_numpy(unit(rng, 4, 8))
    zn, zh = torch.from_numpy(unit(rng, 6, 8)), torch.from_numpy(unit(rng, 12, 8)).view(4, 3, 8)
    bias = (torch.rand(4), torch.rand(6), torch.rand(4, 3))
    got = sampled_softmax_loss(zq, zp, zn, 0.1, z_hard=zh, bias=bias)
    logits = torch.cat([(zq * zp).sum(1, keepdim=True) + bias[0][:, None], zq @ zn.T + bias[1][None, :],
                        torch.einsum("bd,bhd->bh", zq, zh) + bias[2]], dim=1) / 0.1  # (B, 1 + N + H)
    want = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(got, want, atol=1e-6)
    # the same offset on every candidate changes nothing; raising the negatives' prior costs
    same = tuple(torch.full_like(b, 0.7) for b in bias)
    assert torch.allclose(sampled_softmax_loss(zq, zp, zn, 0.1, z_hard=zh, bias=same),
                          sampled_softmax_loss(zq, zp, zn, 0.1, z_hard=zh), atol=1e-6)
    popular_negatives = (torch.zeros(4), torch.ones(6), torch.ones(4, 3))
    assert sampled_softmax_loss(zq, zp, zn, 0.1, z_hard=zh, bias=popular_negatives) > got.new_tensor(0) + \
        sampled_softmax_loss(zq, zp, zn, 0.1, z_hard=zh)


def test_max_margin_bias_moves_the_hinge():
    rng = np.random.default_rng(1)
    zq, zp, zn = (torch.from_numpy(unit(rng, n, 8)) for n in (4, 4, 6))
    plain = max_margin_loss(zq, zp, zn, 0.3)
    lifted = max_margin_loss(zq, zp, zn, 0.3, bias=(torch.full((4,), 5.0), torch.zeros(6), torch.zeros(4, 0)))
    assert plain > 0 and lifted == 0  # a positive 5 points ahead clears every margin


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_searches_cosine_plus_prior_exactly(kind):
    rng = np.random.default_rng(2)
    emb, prior = unit(rng, 400, 16), rng.gamma(1.0, 0.2, size=400).astype(np.float32)
    ids = np.array([f"i{k}" for k in range(400)])
    index = build_index(emb, IndexConfig(kind=kind), prior)
    assert index.d == 17  # [z ; prior]
    got, scores = search(index, ids, emb[:25], k=10, exclude_ids=ids[:25])
    for q in range(25):
        s = emb @ emb[q] + prior  # the model's score
        s[q] = -np.inf
        assert list(got[q]) == list(ids[np.argsort(-s)[:10]])
        assert np.allclose(scores[q], np.sort(s)[::-1][:10], atol=1e-5)
    # and the prior changes the answer: without it the lists differ
    plain, _ = search(build_index(emb, IndexConfig(kind=kind)), ids, emb[:25], k=10, exclude_ids=ids[:25])
    assert (plain != got).any()
    with pytest.raises(ValueError, match="17"):
        search(index, ids, emb[:2, :8], k=3)


def test_embeddings_table_carries_the_prior_and_older_tables_read_as_zero(tmp_path):
    rng = np.random.default_rng(3)
    ids, emb, prior = np.array([f"i{k}" for k in range(25)]), unit(rng, 25, 4), rng.random(25).astype(np.float32)
    write_embeddings(tmp_path / "with", ids, emb, prior, rows_per_part=10)
    assert np.array_equal(read_prior(tmp_path / "with"), prior)
    assert list(read_embeddings(tmp_path / "with")[0]) == list(ids)
    assert "prior" in json.loads((tmp_path / "with" / "manifest.json").read_text())["score"]
    write_embeddings(tmp_path / "without", ids, emb, rows_per_part=10)
    assert np.array_equal(read_prior(tmp_path / "without"), np.zeros(25, dtype=np.float32))


def small_model(n=60, seed=0, prior=True):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    feats = rng.normal(size=(n, 6)).astype(np.float32)
    model = PinSage(ModelConfig(input_dim=6, n_items=n, hidden_dim=8, output_dim=8, n_layers=0,
                                popularity_prior=prior), feats.mean(0), feats.std(0))
    nbrs = Neighbors(np.zeros((n, 1), np.int32), np.zeros((n, 1), np.float32), np.zeros((n, 1), bool))
    return model, feats, nbrs, rng


def test_the_served_weight_is_chosen_on_validation():
    model, feats, nbrs, rng = small_model()
    degree = rng.integers(0, 50, size=60)
    queries = rng.integers(0, 60, size=300)
    popular, rare = np.argsort(-degree)[:3], np.argsort(degree)[:3]
    # targets among the most-interacted items: validation wants a prior
    up = choose_prior_weight(model, feats, nbrs, queries, rng.choice(popular, 300), degree, temperature=0.05)
    assert up["chosen"] > 0
    assert model.prior_weight.item() == pytest.approx(up["chosen"])
    assert up["validation_mrr"][f"{up['chosen']:g}"] > up["validation_mrr"]["0"]
    # targets among the least-interacted items: the plain cosine (weight 0) wins
    down = choose_prior_weight(model, feats, nbrs, queries, rng.choice(rare, 300), degree, temperature=0.05)
    assert down["chosen"] == 0.0 and model.prior_weight.item() == 0.0
    # the exported priors are the chosen weight times log(1 + d)
    model.prior_weight.fill_(0.05)
    assert np.allclose(item_prior(model, degree), 0.05 * np.log1p(degree), atol=1e-6)


def test_a_model_without_the_prior_scores_by_cosine_and_older_checkpoints_load(tmp_path):
    model, feats, nbrs, rng = small_model(prior=False)
    assert model.prior_weight is None
    assert not item_prior(model, np.arange(60)).any()
    assert choose_prior_weight(model, feats, nbrs, np.arange(5), np.arange(5, 10), np.arange(60), 0.05) == {}
    save_model(model, tmp_path)
    config = json.loads((tmp_path / "model_config.json").read_text())
    del config["popularity_prior"]  # a checkpoint written before the prior existed
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    assert load_model(tmp_path).prior_weight is None
    scores = embedding_scorer(unit(rng, 5, 3), np.array([0, 0, 0, 0, 9.0], np.float32))(np.array([0]))
    assert scores[0].argmax() == 4


def test_in_batch_negatives_join_the_shared_ones_with_the_logq_correction():
    from pinsage.model.sampler import MinibatchProducer, SamplerConfig
    from pinsage.model.train import TrainConfig, logq_correction

    rng = np.random.default_rng(4)
    n = 50
    pairs = np.stack([rng.integers(0, n, 400), rng.choice([1, 2, 3, 7], 400, p=[.7, .1, .1, .1])], axis=1)
    feats = rng.normal(size=(n, 4)).astype(np.float32)
    nbrs = Neighbors(np.zeros((n, 1), np.int32), np.zeros((n, 1), np.float32), np.zeros((n, 1), bool))
    candidates = np.arange(40)
    sampler = SamplerConfig(batch_size=64, n_shared_negatives=20, hard_negatives=False, in_batch_negatives=True)
    batch = MinibatchProducer(pairs, feats, nbrs, None, sampler, 0, 0, candidates, 0).make_batch(0)
    assert len(batch.negative_item) == 20 + 64
    assert np.array_equal(batch.negative_item[20:].numpy(), pairs[:64, 1])  # the batch's own positives
    config = TrainConfig(temperature=0.05, sampler=sampler)
    corr = logq_correction(pairs, candidates, n, config, torch.device("cpu")).numpy()
    share = np.bincount(pairs[:, 1], minlength=n) / len(pairs)
    expected = np.where(np.arange(n) < 40, 20 / 40, 0.0) + 64 * share
    assert np.allclose(corr[:40], -0.05 * np.log(expected[:40]), atol=1e-6)
    assert corr[1] < corr[2] < corr[0]  # the most frequent positive is discounted most, a never-positive least
    # uniform negatives only: the correction is one constant, so none is applied
    plain = TrainConfig(sampler=SamplerConfig(in_batch_negatives=False))
    assert logq_correction(pairs, candidates, n, plain, torch.device("cpu")) is None
