import numpy as np
import pytest

from pinsage.eval.metrics import evaluate_scorer, markdown_table, metrics_from_ranks, ranks_from_scores


def test_rank_counts_higher_items_and_half_the_ties():
    scores = np.array([[9.0, 5.0, 3.0, 5.0, 1.0, 5.0]])
    # query item 0 (highest score) is excluded; target 1 ties with items 3 and 5
    assert ranks_from_scores(scores, np.array([0]), np.array([1]))[0] == pytest.approx(1 + 0 + 0.5 * 2)
    # target 4 (lowest): 4 others score higher (query excluded)
    assert ranks_from_scores(scores, np.array([0]), np.array([4]))[0] == pytest.approx(5.0)


def test_constant_scores_rank_in_the_middle():
    n = 11
    ranks = ranks_from_scores(np.zeros((1, n)), np.array([0]), np.array([3]))
    assert ranks[0] == pytest.approx(1 + 0.5 * (n - 2))  # 9 other candidates all tied


def test_metrics_on_hand_made_ranks():
    m = metrics_from_ranks(np.array([1.0, 2.0, 10.0, 10.5, 60.0, 200.0]))
    assert m["mrr"] == pytest.approx(np.mean([1, 1 / 2, 1 / 10, 1 / 10.5, 1 / 60, 1 / 200]))
    assert m["hr@10"] == pytest.approx(3 / 6)
    assert m["hr@50"] == pytest.approx(4 / 6)
    assert m["hr@100"] == pytest.approx(5 / 6)


def test_metrics_refuse_no_pairs():
    with pytest.raises(ValueError):
        metrics_from_ranks(np.array([]))


def test_evaluate_scorer_chunks_consistently():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 4))
    q, t = rng.integers(0, 50, 30), rng.integers(0, 50, 30)
    t = np.where(t == q, (t + 1) % 50, t)
    fn = lambda qq: emb[qq] @ emb.T
    assert np.array_equal(evaluate_scorer(fn, q, t, chunk=7), evaluate_scorer(fn, q, t, chunk=1000))


def test_evaluate_scorer_scores_each_query_once_and_keeps_the_pairs_order():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(40, 3))
    q = rng.integers(0, 6, 200)  # few distinct queries, many pairs each, in shuffled order
    t = np.where(rng.integers(0, 40, 200) == q, (q + 1) % 40, rng.integers(0, 40, 200))
    t = np.where(t == q, (t + 1) % 40, t)
    asked = []

    def fn(qq):
        asked.extend(qq.tolist())
        return emb[qq] @ emb.T

    ranks = evaluate_scorer(fn, q, t, chunk=4)
    assert sorted(asked) == sorted(set(q.tolist()))  # every distinct query scored exactly once
    by_pair = np.concatenate([ranks_from_scores(emb[[a]] @ emb.T, np.array([a]), np.array([b])) for a, b in zip(q, t)])
    assert np.array_equal(ranks, by_pair)  # pair by pair, in the pairs' order


def test_markdown_table_sorted_by_mrr():
    text = markdown_table({"a": metrics_from_ranks(np.array([5.0])), "b": metrics_from_ranks(np.array([1.0]))},
                          1, "Test")
    assert text.index("| b |") < text.index("| a |")
