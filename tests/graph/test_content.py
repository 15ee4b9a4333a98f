"""Content neighbourhoods: what an item without interactions (a new item, a cold twin) is convolved over."""

import numpy as np

from pinsage.graph.content import content_neighbors, content_vectors, rank_profile
from pinsage.graph.neighbors import Neighbors


def test_vectors_are_centred_so_a_shared_direction_does_not_make_everything_alike():
    rng = np.random.default_rng(0)
    common = rng.normal(size=16) * 5  # every item's words share one strong direction (uncentred cosines ~ 1)
    a = common + rng.normal(size=(200, 16))
    raw = a / np.linalg.norm(a, axis=1, keepdims=True)
    assert (raw @ raw.T).mean() > 0.9
    v = content_vectors([a], np.arange(200))
    assert abs((v @ v.T)[~np.eye(200, dtype=bool)].mean()) < 0.05
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    two = content_vectors([a, rng.normal(size=(200, 4))], np.arange(200))  # two blocks, an equal say each
    assert two.shape == (200, 20) and np.allclose(np.linalg.norm(two, axis=1), 1.0, atol=1e-5)


def test_rank_profile_is_the_mean_weight_by_rank_of_full_walk_neighbourhoods():
    w = np.array([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1], [1.0, 0.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0]], bool)
    p = rank_profile(Neighbors(np.zeros((3, 3), np.int32), w, mask))
    assert np.allclose(p, [0.6, 0.25, 0.15])
    empty = rank_profile(Neighbors(np.zeros((2, 4), np.int32), np.zeros((2, 4), np.float32), np.zeros((2, 4), bool)))
    assert np.allclose(empty, 0.25)


def test_nearest_candidates_never_the_item_itself_weighted_by_the_profile():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 8)) * 3
    x = np.repeat(centres, 10, axis=0) + rng.normal(size=(40, 8)) * 0.1  # 4 groups of 10 look-alikes
    v = content_vectors([x], np.arange(40))
    profile = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    nb = content_neighbors(v, np.arange(40), np.arange(40), profile, seed=0)
    assert nb.mask.all()
    assert not (nb.items == np.arange(40)[:, None]).any()  # never itself
    assert (nb.items // 10 == np.arange(40)[:, None] // 10).all()  # its own group
    assert np.allclose(nb.weights, profile)
    sims = v @ v.T
    got = np.take_along_axis(sims, nb.items.astype(np.int64), axis=1)
    assert (np.diff(got, axis=1) <= 1e-6).all()  # best first
    # only candidates are neighbours; a source need not be a candidate
    nb2 = content_neighbors(v, np.array([0, 15]), np.arange(10, 40), profile, seed=0)
    assert nb2.items.min() >= 10 and (nb2.items[1] // 10 == 1).all()


def test_equal_cosines_are_ordered_by_seeded_tie_keys_not_by_index():
    x = np.zeros((30, 3))
    x[:, 0] = 1.0
    x[0] = [0.0, 1.0, 0.0]  # the source; every candidate is equally far from it
    x[1] = [-1.0, 0.0, 0.0]
    v = np.asarray(x, np.float32)  # as given: 29 candidates with cosine 0 to the source -> none kept
    prof = np.full(5, 0.2, np.float32)
    none = content_neighbors(v, np.array([0]), np.arange(1, 30), prof)
    assert not none.mask.any()  # a non-positive cosine is no neighbour
    y = v.copy()
    y[0] = [1.0, 0.0, 0.0]  # now 28 candidates tie at cosine 1
    a = content_neighbors(y, np.array([0]), np.arange(1, 30), prof, seed=0).items[0]
    b = content_neighbors(y, np.array([0]), np.arange(1, 30), prof, seed=0).items[0]
    c = content_neighbors(y, np.array([0]), np.arange(1, 30), prof, seed=5).items[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 1 not in a and not np.array_equal(a, np.arange(2, 7))  # not the index order


def test_a_small_candidate_set_pads_the_row():
    v = content_vectors([np.eye(3)], np.arange(3))
    nb = content_neighbors(v, np.array([0]), np.array([1]), np.full(4, 0.25, np.float32))
    assert nb.items.shape == (1, 4) and nb.mask.sum() <= 1


def test_engaged_beside_within_the_window_or_the_whole_context():
    from pinsage.graph.content import engaged_beside

    context = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    item = np.array([10, 11, 12, 13, 14, 20, 12, 21])
    source = np.zeros(8, bool)
    source[2] = source[6] = True  # item 12 in both contexts
    s, p = engaged_beside(context, item, source, window=1, ordered=True)
    assert sorted(zip(s.tolist(), p.tolist())) == [(12, 11), (12, 13), (12, 20), (12, 21)]
    s, p = engaged_beside(context, item, source, window=2, ordered=True, partner_ok=item != 10)
    assert sorted(p.tolist()) == [11, 13, 14, 20, 21]
    s, p = engaged_beside(context, item, source, window=1, ordered=False)  # no order: the whole context
    assert sorted(p.tolist()) == [10, 11, 13, 14, 20, 21]


def test_beside_first_ranks_by_count_then_fills_with_content():
    from pinsage.graph.content import beside_first

    content = Neighbors(np.array([[7, 8, 9, 5]], np.int32), np.full((1, 4), 0.25, np.float32), np.ones((1, 4), bool))
    profile = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    nb = beside_first(np.array([3, 3, 3, 4]), np.array([5, 6, 5, 1]), np.array([3]), content, profile, seed=0)
    assert nb.items[0].tolist() == [5, 6, 7, 8]  # 5 twice, 6 once, then content (5 not twice)
    assert np.allclose(nb.weights[0], profile) and nb.mask.all()
    alone = beside_first(np.zeros(0, np.int64), np.zeros(0, np.int64), np.array([3]), content, profile, seed=0)
    assert alone.items[0].tolist() == [7, 8, 9, 5]
