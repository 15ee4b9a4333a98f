"""The fixed evaluation split: dedup, ordering, held-out pairs, determinism, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pinsage.data.dataset import DatasetError
from pinsage.data.split import split_interactions


def last_item(df, has_timestamps, seed=0):
    """The ``last-item`` protocol (leave-one-out): what the tests up to the ``tail`` ones check."""
    return split_interactions(df, has_timestamps, seed=seed, protocol="last-item")


def frame(rows, timestamps=True):
    """rows: (context, item[, timestamp]) in file order."""
    df = pd.DataFrame({"context_id": [str(r[0]) for r in rows],
                       "item_id": [str(r[1]) for r in rows]})
    df["weight"] = np.arange(1, len(rows) + 1, dtype=np.float64)  # identifies the source row
    if timestamps:
        df["timestamp"] = np.array([r[2] for r in rows], dtype=np.int64)
    df["row"] = np.arange(len(rows), dtype=np.int64)
    return df


def pairs(df):
    return {c: (q, t) for c, q, t in df[["context_id", "query_item", "target_item"]].itertuples(
        index=False)}


def sequences(df) -> dict:
    """Slow, obvious dedup and ordering: {context: its latest (context, item) rows by (timestamp, row)},
    contexts in order of first appearance in the file."""
    latest = {}
    for r in df.itertuples(index=False):
        key = (r.context_id, r.item_id)
        if key not in latest or (r.timestamp, r.row) >= (latest[key].timestamp, latest[key].row):
            latest[key] = r
    by_ctx = {c: [] for c in df["context_id"]}  # dict keys keep the first appearance
    for r in latest.values():
        by_ctx[r.context_id].append(r)
    return {c: sorted(rs, key=lambda r: (r.timestamp, r.row)) for c, rs in by_ctx.items()}


def held_out(df, hold):
    """Slow, obvious split of every context's sequence: ``hold(context, rows)`` -> (rows kept for
    training, validation pairs, test pairs), pairs as (context, query item, target item)."""
    train, valid, test = set(), [], []
    for c, rs in sequences(df).items():
        kept, v, t = hold(c, rs) if len(rs) >= 3 else (rs, [], [])
        valid, test = valid + v, test + t
        train |= {(r.row, i) for i, r in enumerate(kept)}
    return train, valid, test


def reference(df):
    """The ``last-item`` protocol with timestamps: {context: (query, target)} for validation and test."""
    def last_two(c, rs):
        return rs[:-2], [(c, rs[-3].item_id, rs[-2].item_id)], [(c, rs[-3].item_id, rs[-1].item_id)]

    train, valid, test = held_out(df, last_two)
    return train, {c: (q, t) for c, q, t in valid}, {c: (q, t) for c, q, t in test}


def test_matches_reference_on_random_data_with_ties_and_repeats():
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame({"context_id": rng.integers(0, 150, n).astype(str),
                       "item_id": rng.integers(0, 40, n).astype(str),
                       "weight": np.ones(n),
                       "timestamp": rng.integers(0, 30, n),  # many ties
                       "row": np.arange(n)})
    split = last_item(df, True)
    train, valid, test = reference(df)
    assert set(zip(split.train["row"], split.train["order"])) == train
    assert pairs(split.valid) == valid and pairs(split.test) == test
    assert split.summary()["n_valid_pairs"] == len(valid)
    assert split.summary()["n_duplicates_collapsed"] == n - len(train) - 2 * len(test)


def test_dedup_keeps_latest_occurrence():
    rows = [("u", "a", 50), ("u", "b", 10), ("u", "a", 5), ("u", "c", 20), ("u", "d", 30),
            ("u", "e", 40)]
    split = last_item(frame(rows), True)
    train = split.train
    # 'a' kept once, the ts=50 copy (row 0), so it is the latest: the test target
    assert pairs(split.test)["u"] == ("d", "a")
    assert pairs(split.valid)["u"] == ("d", "e")
    assert sorted(train["item_id"]) == ["b", "c", "d"]
    assert split.summary()["n_duplicates_collapsed"] == 1


def test_dedup_ties_and_order_ties_by_file_order():
    # 'x' twice with the same timestamp: the later row wins; y, z, x share a timestamp
    rows = [("u", "x", 7), ("u", "w", 1), ("u", "y", 7), ("u", "z", 7), ("u", "x", 7)]
    split = last_item(frame(rows), True)
    # sequence: w(1) then y, z, x(row 4) at ts 7 in file order
    assert pairs(split.test)["u"] == ("y", "x")
    assert pairs(split.valid)["u"] == ("y", "z")
    assert split.train.sort_values("order")["item_id"].tolist() == ["w", "y"]
    assert split.train.loc[split.train["item_id"] == "x"].empty


def test_targets_latest_two_query_latest_training_item_and_no_leak():
    rows = [("u1", "i1", 300), ("u1", "i2", 100), ("u1", "i3", 400), ("u1", "i4", 200),
            ("u2", "i1", 10), ("u2", "i5", 30), ("u2", "i6", 20),
            ("u3", "i2", 1), ("u3", "i3", 2)]
    split = last_item(frame(rows), True)
    assert pairs(split.test) == {"u1": ("i4", "i3"), "u2": ("i1", "i5")}
    assert pairs(split.valid) == {"u1": ("i4", "i1"), "u2": ("i1", "i6")}
    held = set(map(tuple, split.valid[["context_id", "target_item"]].to_numpy())) | set(
        map(tuple, split.test[["context_id", "target_item"]].to_numpy()))
    train_pairs = set(map(tuple, split.train[["context_id", "item_id"]].to_numpy()))
    assert not held & train_pairs
    # the query is the latest training interaction of its context
    for c, (q, _) in pairs(split.test).items():
        t = split.train[split.train["context_id"] == c]
        assert t.loc[t["timestamp"].idxmax(), "item_id"] == q
        assert t.loc[t["order"].idxmax(), "item_id"] == q


def test_short_contexts_stay_whole_in_train():
    rows = [("a", "1", 5), ("a", "2", 1), ("b", "1", 1), ("c", "1", 1), ("c", "2", 2),
            ("c", "3", 3)]
    split = last_item(frame(rows), True)
    assert set(split.test["context_id"]) == {"c"}
    short = split.train[split.train["context_id"].isin(["a", "b"])]
    assert sorted(short["row"]) == [0, 1, 2]
    a = short[short["context_id"] == "a"].sort_values("order")
    assert a["item_id"].tolist() == ["2", "1"] and a["order"].tolist() == [0, 1]


def test_train_columns_and_file_order():
    rows = [("u", "a", 3), ("v", "a", 1), ("u", "b", 2), ("u", "c", 1), ("u", "d", 9)]
    split = last_item(frame(rows), True)
    train = split.train
    assert list(train.columns) == ["context_id", "item_id", "weight", "timestamp", "row", "order"]
    assert train["order"].dtype == np.int64
    assert train["row"].tolist() == sorted(train["row"].tolist())
    # weights travel with their rows
    assert (train["weight"] == train["row"] + 1).all()
    for frame_ in (split.valid, split.test):
        assert list(frame_.columns) == ["context_id", "query_item", "target_item"]
        assert all(isinstance(v, str) for v in frame_.to_numpy().ravel())


def test_input_not_in_file_order_is_handled():
    rows = [("u", "a", 1), ("u", "b", 1), ("u", "c", 1), ("u", "d", 1)]
    df = frame(rows).iloc[::-1]
    split = last_item(df, True)
    assert pairs(split.test)["u"] == ("b", "d")  # ties resolved by the 'row' column


def test_without_timestamps_seeded_and_deterministic():
    rng = np.random.default_rng(1)
    n = 2000
    df = pd.DataFrame({"context_id": rng.integers(0, 100, n).astype(str),
                       "item_id": rng.integers(0, 300, n).astype(str),
                       "weight": np.ones(n), "row": np.arange(n)})
    a = last_item(df, False, seed=3)
    b = last_item(df, False, seed=3)
    c = last_item(df, False, seed=4)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert not a.test.equals(c.test)
    assert len(a.test) == len(c.test)  # same contexts qualify, only the order differs
    # invariants per context: everything of the context is train + valid + test, and the query
    # is the highest-order training item
    dedup = df.drop_duplicates(["context_id", "item_id"], keep="last")
    for split in (a, c):
        for ctx, (q, t) in pairs(split.test).items():
            v = pairs(split.valid)[ctx][1]
            tr = split.train[split.train["context_id"] == ctx]
            assert sorted(tr["order"]) == list(range(len(tr)))
            assert tr.loc[tr["order"].idxmax(), "item_id"] == q
            items = set(dedup.loc[dedup["context_id"] == ctx, "item_id"])
            assert set(tr["item_id"]) | {v, t} == items and len(tr) + 2 == len(items)


def test_without_timestamps_dedup_keeps_last_in_file_order():
    rows = [("u", "a"), ("u", "b"), ("u", "a"), ("u", "c"), ("u", "d")]
    seen_a_in_train = False
    for seed in range(20):
        split = last_item(frame(rows, timestamps=False), False, seed=seed)
        train = split.train
        held = {pairs(split.valid)["u"][1], pairs(split.test)["u"][1]}
        assert held | set(train["item_id"]) == {"a", "b", "c", "d"} and len(train) == 2
        assert 0 not in set(train["row"])  # the first 'a' is collapsed into the later one
        if "a" in set(train["item_id"]):
            seen_a_in_train = True
            assert train.loc[train["item_id"] == "a", "row"].tolist() == [2]
    assert seen_a_in_train


def test_seeded_order_varies_with_seed():
    rows = [("u", str(i)) for i in range(20)]
    tests = {pairs(last_item(frame(rows, False), False, seed=s).test)["u"]
             for s in range(10)}
    assert len(tests) > 1


def test_no_context_long_enough_raises():
    rows = [("u", "a", 1), ("u", "b", 2), ("v", "a", 1), ("u", "a", 3)]
    with pytest.raises(DatasetError, match="at least 3"):
        last_item(frame(rows), True)


def test_a_million_rows_split_into_pairs():
    """Scale as data, not as a timing (bench/ times the stages): every context with 3 items gives pairs."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    df = pd.DataFrame({"context_id": rng.integers(0, 50_000, n).astype(str),
                       "item_id": rng.integers(0, 20_000, n).astype(str),
                       "weight": np.ones(n), "timestamp": rng.integers(0, 10**9, n),
                       "row": np.arange(n)})
    split = split_interactions(df, True)
    assert len(split.test) >= len(split.valid) > 0
    assert split.valid["context_id"].nunique() == df["context_id"].nunique()  # ~20 items each: all split


def reference_tail(df):
    """The ``tail`` protocol with timestamps: lists of (context, query, target) pairs."""
    def tail(c, rs):
        n = len(rs)
        h = max(2, round(0.2 * n))
        pairs = [(c, rs[k - 1].item_id, rs[k].item_id) for k in range(n - h, n)]
        return rs[:n - h], pairs[:h // 2], pairs[h // 2:]

    return held_out(df, tail)


def test_tail_is_the_default_and_matches_the_reference_on_random_data():
    rng = np.random.default_rng(11)
    n = 4000
    df = pd.DataFrame({"context_id": rng.integers(0, 120, n).astype(str),
                       "item_id": rng.integers(0, 80, n).astype(str), "weight": np.ones(n),
                       "timestamp": rng.integers(0, 50, n), "row": np.arange(n)})
    split = split_interactions(df, True)
    train, valid, test = reference_tail(df)
    assert set(zip(split.train["row"], split.train["order"])) == train
    as_list = lambda d: list(d[["context_id", "query_item", "target_item"]].itertuples(index=False, name=None))
    assert as_list(split.valid) == valid and as_list(split.test) == test
    assert len(test) > len(valid) > split.valid["context_id"].nunique()  # several pairs per long context


def test_tail_pairs_of_a_hand_made_dataset():
    """One context of 12 items a..l, one of 3 (x y z), one of 2 (too short): pairs known by hand."""
    rows = [("u", chr(ord("a") + k), 100 + k) for k in range(12)]
    rows += [("v", "x", 5), ("v", "y", 6), ("v", "z", 7), ("w", "a", 1), ("w", "b", 2)]
    split = split_interactions(frame(rows), True)
    as_list = lambda d: list(d[["context_id", "query_item", "target_item"]].itertuples(index=False, name=None))
    # u: n = 12, h = max(2, round(2.4)) = 2: k is the validation target (query j), l the test one (query k)
    assert as_list(split.valid) == [("u", "j", "k"), ("v", "x", "y")]
    assert as_list(split.test) == [("u", "k", "l"), ("v", "y", "z")]
    rows = [("u", f"i{k:02d}", k) for k in range(18)]  # n = 18: h = round(3.6) = 4, 2 valid + 2 test
    split = split_interactions(frame(rows), True)
    assert as_list(split.valid) == [("u", "i13", "i14"), ("u", "i14", "i15")]
    assert as_list(split.test) == [("u", "i15", "i16"), ("u", "i16", "i17")]
    assert sorted(split.train["item_id"]) == [f"i{k:02d}" for k in range(14)]
    # last-item on the same data: one pair each, both queried by the latest training item
    split = last_item(frame(rows), True)
    assert as_list(split.valid) == [("u", "i15", "i16")] and as_list(split.test) == [("u", "i15", "i17")]


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        split_interactions(frame([("u", "a", 1), ("u", "b", 2), ("u", "c", 3)]), True, protocol="random")


def _new_items_data():
    rows = [("c1", "a", 0), ("c1", "a", 1), ("c1", "x", 2), ("c1", "b", 3), ("c1", "y", 4), ("c1", "c", 5),
            ("c2", "x", 10), ("c2", "d", 11), ("c2", "e", 12),
            ("c3", "b", 20), ("c3", "x", 21), ("c3", "y", 22), ("c4", "e", 0)]
    return pd.DataFrame(rows, columns=["context_id", "item_id", "timestamp"]).assign(weight=1.0)


def test_new_items_pairs_known_by_hand():
    from pinsage.data.split import split_new_items

    sp = split_new_items(_new_items_data(), True, seed=0, new_items=["x", "y"])
    assert set(sp.new_items["item_id"]) == {"x", "y"} and set(sp.new_items["split"]) == {"valid", "test"}
    assert not sp.train["item_id"].isin(["x", "y"]).any() and len(sp.train) == 7  # (c1, a) collapsed
    k = {(r.context_id, r.item_id): r.k for r in sp.arrivals.itertuples()}
    assert k == {("c1", "x"): 0, ("c2", "x"): 1, ("c3", "x"): 2, ("c1", "y"): 0, ("c3", "y"): 1}

    def pairs(r):
        both = pd.concat([sp.pairs(r, "valid"), sp.pairs(r, "test")])
        return set(zip(both["context_id"], both["query_item"], both["target_item"]))

    # c2's x opens its context (no query); c3's y follows x, itself new: both give no pair
    assert pairs(0) == {("c1", "a", "x"), ("c3", "b", "x"), ("c1", "b", "y")}
    assert pairs(1) == {("c3", "b", "x")}
    assert set(zip(sp.revealed(1)["context_id"], sp.revealed(1)["item_id"])) == {("c1", "x"), ("c1", "y")}
    split_of = dict(zip(sp.new_items["item_id"], sp.new_items["split"]))
    for name in ("valid", "test"):  # a new item's pairs follow it into its half
        assert set(sp.pairs(0, name)["target_item"]) <= {i for i, s in split_of.items() if s == name}


def test_from_new_pairs_known_by_hand():
    """A new item's own page: query = the new item, target = the item engaged right after it."""
    from pinsage.data.split import split_new_items

    sp = split_new_items(_new_items_data(), True, seed=0, new_items=["x", "y"])

    def pairs(r):
        both = pd.concat([sp.pairs(r, "valid", "from-new"), sp.pairs(r, "test", "from-new")])
        return set(zip(both["context_id"], both["query_item"], both["target_item"]))

    # c1: a x b y c; c2: x d e; c3: b x y. c3's x is followed by y, itself new; c3's y closes its context
    assert pairs(0) == {("c1", "x", "b"), ("c2", "x", "d"), ("c1", "y", "c")}
    assert pairs(1) == {("c2", "x", "d")}  # x's first (c1) and y's first (c1) are revealed
    split_of = dict(zip(sp.new_items["item_id"], sp.new_items["split"]))
    for name in ("valid", "test"):
        assert set(sp.pairs(0, name, "from-new")["query_item"]) <= {i for i, s in split_of.items() if s == name}
    with pytest.raises(ValueError, match="direction"):
        sp.pairs(0, "valid", "sideways")


def test_new_items_seeded_share_and_no_timestamps():
    from pinsage.data.split import split_new_items

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"context_id": [f"c{i // 10}" for i in range(2000)],
                       "item_id": [f"i{v}" for v in rng.integers(0, 300, 2000)]}).assign(weight=1.0)
    a = split_new_items(df, False, seed=3)
    b = split_new_items(df, False, seed=3)
    active = df["item_id"].nunique()
    assert len(a.new_items) == round(0.1 * active)
    assert a.new_items.equals(b.new_items) and a.arrivals.equals(b.arrivals)  # seeded
    assert not split_new_items(df, False, seed=4).new_items.equals(a.new_items)
    for _, ks in a.arrivals.groupby("item_id")["k"]:  # each new item's interactions ranked 0..n-1
        assert sorted(ks) == list(range(len(ks)))
    assert set(a.train["item_id"]).isdisjoint(a.new_items["item_id"])
    with pytest.raises(DatasetError, match="expected at least 2"):
        split_new_items(df.head(3), False, seed=0, new_items=["i0"])


def test_tail_without_timestamps_holds_out_a_seeded_chain_of_each_contexts_last_fifth():
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"context_id": rng.integers(0, 60, n).astype(str),
                       "item_id": rng.integers(0, 400, n).astype(str), "weight": np.ones(n), "row": np.arange(n)})
    a, b, c = (split_interactions(df, False, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a.valid, b.valid)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test) and len(a.test) == len(c.test)  # the order differs, not the counts
    dedup = df.drop_duplicates(["context_id", "item_id"], keep="last")
    for ctx, items in dedup.groupby("context_id")["item_id"]:
        size, h = len(items), max(2, round(0.2 * len(items)))
        tr = a.train[a.train["context_id"] == ctx]
        v = a.valid[a.valid["context_id"] == ctx]
        t = a.test[a.test["context_id"] == ctx]
        assert sorted(tr["order"]) == list(range(size - h)) and (len(v), len(t)) == (h // 2, h - h // 2)
        # one chain: the latest training item -> the validation targets -> the test targets
        chain = [tr.loc[tr["order"].idxmax(), "item_id"]] + list(v["target_item"]) + list(t["target_item"])
        assert list(pd.concat([v, t])["query_item"]) == chain[:-1]
        assert set(tr["item_id"]) | set(chain) == set(items) and len(set(chain[1:])) == h
