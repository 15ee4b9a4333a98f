"""EASE and RP3beta against hand computations, and their selection on validation pairs only."""

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from pinsage.eval import baselines
from pinsage import pipeline
from pinsage.eval.metrics import evaluate_scorer, metrics_from_ranks
from pinsage.graph.bipartite import build_graph
from pinsage.run.config import PipelineConfig

from conftest import make_community_dataset


def graph_from(contexts: list[list[int]], n_items: int, weights: dict | None = None):
    """contexts[c] = the items of context c; weights[(c, i)] overrides the edge weight 1."""
    items = [i for c in contexts for i in c]
    ctx = [c for c, members in enumerate(contexts) for _ in members]
    w = [(weights or {}).get((c, i), 1.0) for c, i in zip(ctx, items)]
    return build_graph(np.array(items), np.array(ctx), n_items, len(contexts), np.array(w))


# Five items; item 5 of the catalogue never interacts. FIVE has as many contexts as items (EASE's
# Cholesky route), FIVE_DUAL two contexts (its Woodbury route).
FIVE = [[0, 1, 2], [1, 2, 3], [0, 3, 4], [2, 4], [0, 1]]
FIVE_DUAL = [[0, 1, 2, 3], [1, 2, 4]]


def ease_by_formula(x: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P diag(1/diag P), P = (X^T X + lam I)^-1, straight from the paper, in float64."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    return np.eye(len(p)) - p @ np.diag(1.0 / np.diag(p))


def dense_x(contexts, n_items, weights=None) -> np.ndarray:
    x = np.zeros((len(contexts), n_items))
    for c, members in enumerate(contexts):
        for i in members:
            x[c, i] = (weights or {}).get((c, i), 1.0)
    return x


@pytest.mark.parametrize("contexts", [FIVE, FIVE_DUAL])
@pytest.mark.parametrize("lam", [0.5, 3.0, 50.0])
def test_ease_scores_are_the_formula_on_five_items(lam, contexts):
    weights = {(0, 1): 2.0, (1, 4): 0.5}
    g = graph_from(contexts, 6, weights)
    x = dense_x(contexts, 5, weights)
    expected = ease_by_formula(x, lam * np.mean(x[x > 0] ** 2))  # lambda in units of the mean squared weight
    assert np.allclose(np.diag(expected), 0.0)
    (params, score), = baselines.ease_scorers(g, [lam])
    assert params == {"lambda": lam}
    s = score(np.arange(6))  # (6, 6)
    assert np.allclose(s[:5, :5], expected, atol=1e-6)
    assert np.all(np.diag(s) == 0)
    assert np.all(s[:, 5] == 0) and np.all(s[5] == 0)  # the item without interactions
    assert np.abs(s[:5, :5]).max() > 0.01  # not trivially zero


@pytest.mark.parametrize("n_contexts", [6, 60])  # fewer contexts than items, and more
def test_both_ease_routes_equal_the_formula(n_contexts):
    rng = np.random.default_rng(n_contexts)
    x = (rng.random((n_contexts, 20)) < 0.3) * rng.uniform(0.5, 2.0, (n_contexts, 20))
    x = x[:, x.any(axis=0)]
    q = np.arange(x.shape[1])
    for route in (baselines._ease_primal, baselines._ease_dual):
        for lam, rows in zip((1.0, 20.0), route(sp.csr_matrix(x), [1.0, 20.0])):
            expected = ease_by_formula(x, lam)
            assert np.allclose(rows(q), expected, atol=1e-5), route.__name__


def test_ease_is_unchanged_by_a_global_rescaling_of_the_weights():
    base = baselines.ease_scorers(graph_from(FIVE, 6, {(1, 3): 2.0}), [10.0])
    scaled = baselines.ease_scorers(graph_from(FIVE, 6, {(c, i): 3.0 * (2.0 if (c, i) == (1, 3) else 1.0)
                                                       for c, m in enumerate(FIVE) for i in m}), [10.0])
    q = np.arange(6)
    assert np.allclose(next(base)[1](q), next(scaled)[1](q), atol=1e-6)


def test_ease_skip_above_the_limit():
    g = graph_from(FIVE, 6)
    assert baselines.ease_skip_reason(g, max_items=5) is None
    reason = baselines.ease_skip_reason(g, max_items=4)
    assert reason == "5 items with training interactions (catalogue of 6) exceed the dense-inverse limit of 4"
    tuned = baselines.tuned_baselines(g, np.array([0, 1]), np.array([1, 2]), ease_max_items=4)
    assert tuned.skipped == {"ease": reason}
    assert set(tuned.scorers) == {"rp3beta"} and "ease" not in tuned.hyperparameters
    assert set(baselines.tuned_baselines(g, np.array([0]), np.array([1]), ease_max_items=5).scorers) == \
        {"ease", "rp3beta"}


# Four items: c0 = {0, 1}, c1 = {0, 1, 2}, c2 = {2, 3}.
WALK = [[0, 1], [0, 1, 2], [2, 3]]


def rp3(g, alpha, beta):
    (_, score), = baselines.rp3beta_scorers(g, [alpha], [beta])
    return score


def test_rp3beta_alpha_1_beta_0_is_the_two_step_walk():
    s = rp3(graph_from(WALK, 5), 1.0, 0.0)(np.array([0, 2, 4]))
    # from 0: c0 or c1 (1/2 each); c0 -> 0, 1 (1/2 each); c1 -> 0, 1, 2 (1/3 each)
    assert np.allclose(s[0], [1 / 4 + 1 / 6, 1 / 4 + 1 / 6, 1 / 6, 0, 0])
    # from 2: c1 or c2; c2 -> 2, 3 (1/2 each)
    assert np.allclose(s[1], [1 / 6, 1 / 6, 1 / 6 + 1 / 4, 1 / 4, 0])
    assert np.all(s[2] == 0)  # item 4 has no contexts


def test_rp3beta_weights_move_the_context_step_only():
    # as RP3betaRecommender: item -> context from the binary matrix, context -> item from the weights
    s = rp3(graph_from(WALK, 4, {(1, 2): 3.0}), 1.0, 0.0)(np.array([0, 2]))
    assert np.allclose(s[0], [1 / 4 + 1 / 10, 1 / 4 + 1 / 10, 3 / 10, 0])  # c1 -> 2 with 3/5
    assert np.allclose(s[1], [1 / 10, 1 / 10, 3 / 10 + 1 / 4, 1 / 4])  # 2 -> c1, c2 still 1/2 each


def test_rp3beta_alpha_raises_the_normalised_transitions():
    s = rp3(graph_from(WALK, 4), 0.5, 0.0)(np.array([0]))
    h = np.sqrt(1 / 2)
    assert np.allclose(s[0], [h * h + h * np.sqrt(1 / 3), h * h + h * np.sqrt(1 / 3), h * np.sqrt(1 / 3), 0])


def test_rp3beta_beta_pushes_popular_items_down():
    # query 0; popular item 1 in six contexts, niche item 2 in one
    contexts = [[0, 1, 2], [0, 1]] + [[1, 3 + k] for k in range(4)]
    g = graph_from(contexts, 7)
    q = np.array([0])
    plain, damped = rp3(g, 1.0, 0.0)(q)[0], rp3(g, 1.0, 0.75)(q)[0]
    assert plain[1] == pytest.approx(1 / 2 * 1 / 3 + 1 / 2 * 1 / 2) and plain[2] == pytest.approx(1 / 6)
    assert plain[1] > plain[2] and damped[1] < damped[2]
    degree = g.item_degree()
    assert np.allclose(damped, plain / degree ** 0.75)


def recording(score, seen):
    def fn(q):
        seen.extend(np.asarray(q).tolist())
        return score(q)
    return fn


def test_selection_uses_the_validation_pairs_only():
    n = 30
    vq, vt = np.array([0, 1, 2]), np.array([10, 11, 12])
    tq, tt = np.array([3, 4, 5]), np.array([20, 21, 22])

    def favouring(pairs_q, pairs_t):
        def score(q):
            s = np.zeros((len(q), n), np.float32)
            for row, query in enumerate(q):
                s[row, pairs_t[pairs_q == query]] = 1.0
            return s
        return score

    good_on_test, good_on_valid = favouring(tq, tt), favouring(vq, vt)
    seen: list = []
    chosen = baselines.select_on_validation(
        [({"k": 1.0}, recording(good_on_test, seen)), ({"k": 2.0}, recording(good_on_valid, seen))], vq, vt)
    assert chosen.params == {"k": 2.0}
    assert set(seen) <= set(vq.tolist())  # never scored a test query
    assert [p["k"] for p in chosen.grid] == [1.0, 2.0]
    assert chosen.grid[1]["validation_mrr"] == pytest.approx(1.0)
    assert chosen.grid[0]["validation_mrr"] == pytest.approx(
        metrics_from_ranks(evaluate_scorer(good_on_test, vq, vt))["mrr"])
    # on test the other one would have won: the choice was not made there
    assert metrics_from_ranks(evaluate_scorer(good_on_test, tq, tt))["mrr"] > \
        metrics_from_ranks(evaluate_scorer(chosen.scorer, tq, tt))["mrr"]


def test_selection_keeps_the_first_of_equal_scores():
    score = lambda q: np.zeros((len(q), 5), np.float32)  # noqa: E731
    chosen = baselines.select_on_validation([({"k": 1.0}, score), ({"k": 2.0}, score)], np.array([0]), np.array([1]))
    assert chosen.params == {"k": 1.0}


def small_config(data, out) -> PipelineConfig:
    cfg = PipelineConfig(data=str(data), out=str(out), pixie_walks_per_item=50)
    cfg.features.word2vec_dim, cfg.features.word2vec_epochs = 8, 2
    cfg.walks.walks_per_item, cfg.walks.top_t = 30, 5
    cfg.model.hidden_dim, cfg.model.output_dim = 8, 8
    cfg.train.epochs, cfg.train.num_workers, cfg.train.device = 1, 0, "cpu"
    cfg.train.sampler = dataclasses.replace(cfg.train.sampler, batch_size=64, n_shared_negatives=10)
    return cfg


def test_evaluate_reports_the_validation_choice(tmp_path, monkeypatch):
    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=60)
    cfg = small_config(data, tmp_path / "out")
    pipeline.run_all(cfg, log=lambda s: None)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name, grid_size in (("ease", len(baselines.EASE_LAMBDAS)),
                            ("rp3beta", len(baselines.RP3BETA_ALPHAS) * len(baselines.RP3BETA_BETAS))):
        grid = m["selection"][name]
        assert len(grid) == grid_size
        best = max(grid, key=lambda p: p["validation_mrr"])
        assert m["hyperparameters"][name] == {k: v for k, v in best.items() if k != "validation_mrr"}
        assert m["validation"]["methods"][name]["mrr"] == pytest.approx(best["validation_mrr"])
        assert set(m["methods"][name]) == {"mrr", "hr@10", "hr@50", "hr@100"}
    assert m["skipped"] == {}
    assert {"pinsage", "itemknn", "ease", "rp3beta"} <= set(m["methods"])
    ranks = pq.read_table(tmp_path / "out" / "ranks.parquet").to_pandas()
    assert {"ease", "rp3beta"} <= set(ranks.columns)
    for split, block in (("test", m["methods"]), ("valid", m["validation"]["methods"])):
        r = ranks.loc[ranks["split"] == split, "ease"].to_numpy()
        assert metrics_from_ranks(r)["mrr"] == pytest.approx(block["ease"]["mrr"])
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert table.count("| ease |") == 2 and table.count("| rp3beta |") == 2
    assert f"- ease: lambda {m['hyperparameters']['ease']['lambda']:g}" in table

    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 10)
    pipeline.evaluate(cfg, log=lambda s: None)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "ease" not in m["methods"] and "ease" not in m["hyperparameters"]
    assert m["skipped"]["ease"].endswith("exceed the dense-inverse limit of 10")
    assert "- ease: skipped, " in (tmp_path / "out" / "metrics.md").read_text()
