"""The popularity prior: score(q, i) = z_q . z_i + w log(1 + d_i), w chosen on validation after
training, carried by the embeddings table and searched exactly by the index."""

import json

import numpy as np
import pytest
import torch

from pinsage.eval.metrics import embedding_scorer
from pinsage.export.embed import item_prior
from pinsage.export.embeddings import read_embeddings, read_prior, write_embeddings
from pinsage.export.index import IndexConfig, build_index, search
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import ModelConfig, PinSage, load_model, save_model
from pinsage.validation import choose_prior_weight


def unit(rng, n, d):
    z = rng.normal(size=(n, d)).astype(np.float32)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


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



def test_offsets_rank_like_a_scorer_with_the_prior_for_every_weight():
    from pinsage.eval.metrics import evaluate_offsets, evaluate_scorer

    rng = np.random.default_rng(5)
    emb, log_degree = unit(rng, 300, 8), np.log1p(rng.integers(0, 40, 300)).astype(np.float32)
    queries, targets = rng.integers(0, 300, 700), rng.integers(0, 300, 700)
    weights = np.float32([0.0, 0.01, 0.05, 0.2])
    got = evaluate_offsets(embedding_scorer(emb), queries, targets, weights[:, None] * log_degree[None, :],
                           chunk=64)  # chunks that do not divide the queries
    for w, row in zip(weights, got):
        assert np.array_equal(row, evaluate_scorer(embedding_scorer(emb, w * log_degree), queries, targets))
    assert not np.array_equal(got[0], got[-1])
