"""EASE and RP3beta against hand computations, and their selection on validation pairs only."""

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from conftest import make_community_dataset

from pinsage import pipeline
from pinsage.eval import baselines, tuning
from pinsage.eval.metrics import evaluate_scorer, metrics_from_ranks
from pinsage.graph.bipartite import build_graph
from pinsage.run.config import PipelineConfig


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
    for route in (baselines._ease_primal_solver, baselines._ease_dual_solver):
        solve = route(sp.csr_matrix(x))
        for lam in (1.0, 20.0):
            rows = solve(lam)
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
    tuned = tuning.tuned_baselines(g, np.array([0, 1]), np.array([1, 2]), ease_max_items=4)
    assert tuned.skipped == {"ease": reason}
    # itemknn is tuned too now (weights, shrinkage), beside rp3beta
    assert set(tuned.scorers) == {"rp3beta", "itemknn"} and "ease" not in tuned.hyperparameters
    assert set(tuning.tuned_baselines(g, np.array([0]), np.array([1]), ease_max_items=5).scorers) == \
        {"ease", "rp3beta", "itemknn"}


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
    chosen = tuning.select_on_validation(
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
    chosen = tuning.select_on_validation([({"k": 1.0}, score), ({"k": 2.0}, score)], np.array([0]), np.array([1]))
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
    n_valid = m["validation"]["n_pairs"]
    assert n_valid <= tuning.VALIDATION_SAMPLE  # every validation pair scores the grid here
    for name, grid_size in (("ease", len(baselines.EASE_LAMBDAS)),
                            ("rp3beta", len(baselines.RP3BETA_ALPHAS) * len(baselines.RP3BETA_BETAS)),
                            ("itemknn", len(baselines.ITEMKNN_SHRINKS))):
        sel = m["selection"][name]
        grid = sel["grid"]
        assert (sel["validation_pairs"], sel["of_validation_pairs"]) == (n_valid, n_valid)
        # unweighted data: one treatment (the three differ by a constant factor), its initial grid,
        # then any extension past an edge
        assert {p["weights"] for p in grid} == {"binary"}
        assert grid_size <= len(grid) <= grid_size + 2 * 2 * tuning.MAX_EXTENSIONS
        best = next(p for p in grid if p["validation_mrr"] == max(q["validation_mrr"] for q in grid))
        assert m["hyperparameters"][name] == {k: v for k, v in best.items() if k != "validation_mrr"}
        assert list(m["hyperparameters"][name])[-1] == "weights"
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
    chosen = m["hyperparameters"]["ease"]
    assert f"- ease: lambda {chosen['lambda']:g}, weights {chosen['weights']} (best validation MRR of" in table

    monkeypatch.setattr(baselines, "EASE_MAX_ITEMS", 10)
    pipeline.evaluate(cfg, log=lambda s: None)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "ease" not in m["methods"] and "ease" not in m["hyperparameters"]
    assert m["skipped"]["ease"].endswith("exceed the dense-inverse limit of 10")
    assert "- ease: skipped, " in (tmp_path / "out" / "metrics.md").read_text()


# ---------------------------------------------------------------------------------------------
# Grids that extend past an edge, the weight treatment, content-only `combined`

def ranked_at(k_of: "callable", n_items: int = 40):
    """A Grid model whose scorer puts every validation target at rank k_of(params) exactly (k - 1
    items above it, the rest below), so the validation MRR is 1 / k_of(params): a known peak."""
    def model(params):
        k = int(k_of(params))

        def score(q):
            s = np.full((len(q), n_items), -1.0, np.float32)
            for row, query in enumerate(q):
                s[row, (query + 1) % n_items] = 0.0  # the target (see PAIRS)
                above = [i for i in range(n_items) if i not in (query, (query + 1) % n_items)][:k - 1]
                s[row, above] = 1.0
            return s
        return score
    return model


PAIRS = (np.arange(5), np.arange(1, 6))  # target = query + 1


def test_grid_extends_past_the_edge_until_the_best_is_interior():
    # MRR peaks at lambda = 32,000 (strictly falls away from it): far above the initial grid's top
    # (2,000), reached by x4 steps
    k_of = lambda p: 1 + round(2 * abs(np.log(p["lambda"] / 32_000.0) / np.log(4.0)))  # noqa: E731
    grid = tuning.Grid(lambda w: ranked_at(k_of), (tuning.Axis("lambda", baselines.EASE_LAMBDAS, factor=4.0),),
                          weights=("binary",))
    chosen = tuning.select_on_validation(grid, *PAIRS)
    assert chosen.params == {"lambda": 32_000.0, "weights": "binary"}
    tried = [p["lambda"] for p in chosen.grid]
    assert tried == list(baselines.EASE_LAMBDAS) + [8_000.0, 32_000.0, 128_000.0]  # stops once interior
    assert chosen.cap_hit == {} and chosen.grid[-1]["validation_mrr"] == pytest.approx(1 / 3)
    # with one extension allowed the search stops on the edge and says so
    capped = tuning.select_on_validation(dataclasses.replace(grid, max_extensions=1), *PAIRS)
    assert capped.params["lambda"] == 8_000.0 and capped.cap_hit == {"lambda": "upper"}
    assert capped.record()["cap_hit"] == {"lambda": "upper"}


def test_grid_extends_each_axis_both_ways_and_respects_a_domain_bound():
    # RP3beta's axes; the peak is at alpha = 4 (above the grid) and beta = -0.5 (below it)
    k_of = lambda p: 1 + abs(np.log2(p["alpha"] / 4.0)) + abs(p["beta"] + 0.5) / 0.25  # noqa: E731
    axes = (tuning.Axis("alpha", baselines.RP3BETA_ALPHAS, factor=2.0),
            tuning.Axis("beta", baselines.RP3BETA_BETAS, step=0.25))
    chosen = tuning.select_on_validation(tuning.Grid(lambda w: ranked_at(k_of), axes, weights=("raw",)), *PAIRS)
    assert chosen.params == {"alpha": 4.0, "beta": -0.5, "weights": "raw"}
    assert chosen.grid[-1]["validation_mrr"] < 1.0 and chosen.cap_hit == {}
    # shrinkage cannot go below 0: a best point there is on its domain bound, not extended
    shrink = tuning.Axis("shrink", baselines.ITEMKNN_SHRINKS, factor=10.0, lower=0.0)
    at_zero = tuning.select_on_validation(
        tuning.Grid(lambda w: ranked_at(lambda p: 1 + p["shrink"]), (shrink,), weights=("raw",)), *PAIRS)
    assert at_zero.params["shrink"] == 0.0 and at_zero.at_bound == {"shrink": 0.0}
    assert len(at_zero.grid) == len(baselines.ITEMKNN_SHRINKS)


def noisy_weights_graph(seed: int = 0):
    """Eight communities of six items; each context takes four items of one community (weight 1 to 3)
    and one item of another community with a huge weight (1,000: a bot, a song on repeat). The counts
    point at the noise, the binary structure at the community. Validation pairs: each item and the
    next item of its community."""
    rng = np.random.default_rng(seed)
    n_comm, size = 8, 6
    contexts, weights = [], {}
    for c in range(160):
        comm = int(rng.integers(n_comm))
        members = [int(i) for i in comm * size + rng.choice(size, 4, replace=False)]
        noise = int((comm + rng.integers(1, n_comm)) % n_comm * size + rng.integers(size))
        contexts.append(members + [noise])
        weights.update({(c, i): float(rng.integers(1, 4)) for i in members})
        weights[(c, noise)] = 1000.0
    g = graph_from(contexts, n_comm * size, weights)
    q = np.arange(n_comm * size)
    t = (q // size) * size + (q % size + 1) % size  # the next item of the same community
    return g, q, t


def test_the_weight_treatment_is_chosen_on_validation_and_binary_wins_over_noisy_counts():
    g, q, t = noisy_weights_graph()
    tuned = tuning.tuned_baselines(g, q, t, ease_max_items=100)
    models = {"ease": baselines.ease_model, "rp3beta": baselines.rp3beta_model, "itemknn": baselines.itemknn_model}
    for name in ("ease", "rp3beta", "itemknn"):
        chosen = tuned.hyperparameters[name]
        by_weights = {w: max(p["validation_mrr"] for p in tuned.selection[name]["grid"] if p["weights"] == w)
                      for w in baselines.WEIGHTS}
        assert max(by_weights.values()) == by_weights[chosen["weights"]]
        assert by_weights["raw"] < 0.5 * by_weights[chosen["weights"]], (name, by_weights)  # raw counts mislead
        # the chosen scorer is that treatment's model at the chosen settings
        params = {k: v for k, v in chosen.items() if k != "weights"}
        model = models[name](g, chosen["weights"])
        assert np.array_equal(evaluate_scorer(tuned.scorers[name], q, t), evaluate_scorer(model(params), q, t))
    # EASE and ItemKNN are cosine/regression on the counts themselves: binary wins outright. (RP3beta
    # normalises each context's weights and raises them to alpha, which can mute the noise: there
    # log1p and binary come close, and raw loses, as asserted above.)
    assert tuned.hyperparameters["ease"]["weights"] == "binary"
    assert tuned.hyperparameters["itemknn"]["weights"] == "binary"


def test_rp3beta_binary_weights_ignore_a_heavy_decoy():
    # query 0 shares three contexts with its target 1 (with fillers 10..15, weight 1), and meets each
    # decoy 20, 21, 22 once, in a context where the decoy has weight 1,000
    contexts = [[0, 1, 10, 11], [0, 1, 12, 13], [0, 1, 14, 15], [0, 20], [0, 21], [0, 22]]
    weights = {(3, 20): 1000.0, (4, 21): 1000.0, (5, 22): 1000.0}
    g = graph_from(contexts, 23, weights)
    q, t = np.array([0]), np.array([1])
    ranks = {w: evaluate_scorer(next(baselines.rp3beta_scorers(g, [1.0], [0.0], weights=w))[1], q, t)[0]
             for w in baselines.WEIGHTS}
    assert ranks["binary"] == 1.0 and ranks["raw"] == 4.0 and ranks["log1p"] == 4.0


def test_validation_subsample_is_seeded_and_bounded():
    q, t = np.arange(100), np.arange(100) + 1000
    a = tuning.validation_subsample(q, t, max_pairs=30, seed=0)
    b = tuning.validation_subsample(q, t, max_pairs=30, seed=0)
    assert len(a[0]) == 30 and np.array_equal(a[0], b[0]) and np.array_equal(a[1] - 1000, a[0])
    assert np.all(np.diff(a[0]) > 0)  # original order
    assert tuning.validation_subsample(q, t, max_pairs=100)[0] is q
    chosen = tuning.select_on_validation([({"k": 1.0}, lambda x: np.zeros((len(x), 1100), np.float32))], q, t,
                                            max_pairs=30)
    assert (chosen.n_pairs, chosen.n_pairs_total) == (30, 100)


def test_itemknn_weights_and_shrinkage():
    g = graph_from(WALK, 5, {(1, 2): 3.0})
    s = baselines.itemknn(g)(np.array([0]))[0]  # binary: |C_0 & C_j| / sqrt(|C_0| |C_j|)
    assert np.allclose(s, [1.0, 1.0, 1 / 2, 0, 0])
    raw = baselines.itemknn(g, weights="raw")(np.array([0]))[0]  # item 2's vector (3, 1) over c1, c2
    assert raw[2] == pytest.approx(3 / (np.sqrt(2) * np.sqrt(10)))
    shrunk = baselines.itemknn(g, shrink=10.0)(np.array([0]))[0]
    assert shrunk[1] == pytest.approx(2 / (2 + 10)) and shrunk[2] == pytest.approx(1 / (2 + 10))


def test_interaction_matrix_treatments():
    g = graph_from(WALK, 4, {(1, 2): 3.0})
    assert baselines.interaction_matrix(g, "raw")[1, 2] == 3.0
    assert baselines.interaction_matrix(g, "log1p")[1, 2] == pytest.approx(np.log(4.0))
    assert baselines.interaction_matrix(g, "binary")[1, 2] == 1.0
    with pytest.raises(ValueError, match="weights must be one of"):
        baselines.interaction_matrix(g, "sqrt")


def test_combined_is_content_only():
    rng = np.random.default_rng(0)
    annotation = rng.normal(size=(6, 8)).astype(np.float32)
    annotation[2] = annotation[1]  # items 1 and 2: the same content ...
    log_degree = np.log1p(np.array([3, 0, 50, 4, 7, 1], np.float32))[:, None]  # ... very different degrees
    blocks = {"annotation": annotation, "has_image": np.zeros((6, 1), np.float32), "log_degree": log_degree}
    s = baselines.combined(blocks)(np.array([0, 3]))
    assert np.allclose(s[:, 1], s[:, 2])  # the degree block is ignored
    assert np.allclose(s, baselines.combined({"annotation": annotation})(np.array([0, 3])))
    # without images: the cosine of the standardised annotation vectors
    z = (annotation - annotation.mean(0)) / annotation.std(0)
    assert np.allclose(s, baselines.annotation(z)(np.array([0, 3])), atol=1e-5)
    # with images both content blocks count, each unit-scaled
    visual = rng.normal(size=(6, 30)).astype(np.float32)
    both = baselines.combined({**blocks, "visual": visual})(np.array([0]))
    assert not np.allclose(both, s[:1])
    with pytest.raises(ValueError, match="no content block"):
        baselines.combined({"log_degree": log_degree})


def test_content_blocks_are_the_feature_tables_vector_columns():
    from pinsage.features.build import VECTOR_COLUMNS

    assert baselines.CONTENT_BLOCKS == VECTOR_COLUMNS


def test_weight_treatments_are_searched_only_where_weights_differ():
    from pinsage.graph.bipartite import build_graph

    items, contexts = np.array([0, 1, 1, 2]), np.array([0, 0, 1, 1])
    assert tuning.weight_treatments(build_graph(items, contexts, 3, 2)) == ("binary",)
    assert tuning.weight_treatments(build_graph(items, contexts, 3, 2, weights=np.full(4, 3.0))) == ("binary",)
    weighted = build_graph(items, contexts, 3, 2, weights=np.array([1.0, 5.0, 2.0, 1.0]))
    assert tuning.weight_treatments(weighted) == baselines.WEIGHTS


def test_grid_stops_extending_on_a_plateau_and_says_so():
    # lambda 8,000 lifts MRR by a quarter; 32,000 by 0.25% more (below PLATEAU_GAIN): the curve has
    # reached its limit, so the search stops there instead of running to the extension cap
    ranks = {10.0: 520, 50.0: 519, 200.0: 518, 500.0: 517, 1000.0: 510, 2000.0: 500, 8000.0: 402}
    k_of = lambda p: ranks.get(p["lambda"], 401)  # noqa: E731
    grid = tuning.Grid(lambda w: ranked_at(k_of, n_items=600),
                          (tuning.Axis("lambda", baselines.EASE_LAMBDAS, factor=4.0),), weights=("binary",))
    chosen = tuning.select_on_validation(grid, *PAIRS)
    assert [p["lambda"] for p in chosen.grid] == list(baselines.EASE_LAMBDAS) + [8_000.0, 32_000.0]
    assert chosen.params["lambda"] == 32_000.0
    assert chosen.plateau == {"lambda": "upper"} and chosen.cap_hit == {}
    assert chosen.record()["plateau"] == {"lambda": "upper"}


def test_popularity_gives_every_query_the_items_by_training_interactions():
    g = graph_from(FIVE, 6)  # degrees: item 0 in 3 contexts, 1: 3, 2: 3, 3: 2, 4: 2, 5: none
    s = baselines.popularity(g)(np.array([4, 0]))
    assert s.shape == (2, 6)
    assert s[0].tolist() == s[1].tolist() == [3, 3, 3, 2, 2, 0]


def test_annotation_is_the_cosine_of_the_word_vectors():
    v = np.array([[1, 0], [1, 1], [0, 2], [0, 0]], dtype=np.float32)  # item 3 has no known word
    s = baselines.annotation(v)(np.array([0, 1, 3]))
    h = np.sqrt(0.5)
    assert np.allclose(s, [[1, h, 0, 0], [h, 1, h, 0], [0, 0, 0, 0]], atol=1e-6)


def test_pixie_scores_are_visit_counts_of_walks_from_the_query():
    # items 0-1 share a context, items 2-3 another; item 4 shares one with 1 only
    g = graph_from([[0, 1], [2, 3], [1, 4]], 5)
    s = baselines.pixie(g, walks_per_item=2000, restart_prob=0.5, max_walk_length=4, seed=0)(np.array([0, 2]))
    assert s.shape == (2, 5)
    assert s[0, 0] == 0 and s[1, 2] == 0  # the query itself is not counted
    assert s[0, 1] > s[0, 4] > 0 and s[0, 2] == s[0, 3] == 0  # 1 is one hop away, 4 two; 2, 3 unreachable
    assert s[1].tolist() == [0, 0, 0, s[1, 3], 0] and s[1, 3] > 0
    again = baselines.pixie(g, walks_per_item=2000, restart_prob=0.5, max_walk_length=4, seed=0)(np.array([0, 2]))
    assert np.array_equal(s, again)  # seeded
