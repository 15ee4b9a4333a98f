"""The fixed, leakage-free evaluation split (see docs/evaluation.md).

1. Repeated (context, item) rows collapse to the latest one: the largest timestamp, ties broken by
   file order (``row``); without timestamps, the last one in file order.
2. Each context's remaining interactions are ordered by timestamp, ties by file order; without
   timestamps by a seeded random permutation per context (numpy Generator; deterministic for a
   given seed and input).
3. Contexts with fewer than 3 interactions keep everything in training. For every other context
   (n interactions), by protocol:

   * ``tail`` (the default; the paper's pairs, "item i engaged right after item q"): the last
     h = max(2, round(0.2 n)) are held out; the earlier floor(h / 2) of them are validation
     targets, the rest test targets, and each target's query is the item engaged right before it
     in the same context (a training item, or an earlier held-out one). With h = 2 that is one
     validation and one test pair per context.
   * ``last-item`` (leave-one-out, as DGL's PinSage example evaluates): the latest is the test
     target, the one before it the validation target, and the query of both is the latest
     remaining training interaction.
4. Held-out interactions are removed from ``train`` altogether.

Everything is vectorised (factorize, then sorts of packed int64 keys); there is no Python loop
over contexts: 10^7 interactions split in about 5 s on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pinsage.data.dataset import DatasetError

MIN_INTERACTIONS = 3
PROTOCOLS = ("tail", "last-item")
TAIL_SHARE = 0.2  # tail: the share of each context held out (at least 2 interactions)
PAIR_COLUMNS = ["context_id", "query_item", "target_item"]


@dataclass
class Split:
    """Training interactions and held-out evaluation pairs.

    ``train``: the input columns (context_id, item_id, weight, timestamp if any, row, ...) plus
    ``order`` (int64, position of the interaction within its context's sequence, 0 = oldest),
    deduplicated, held-out rows removed, in file order (ascending ``row``).
    ``valid`` / ``test``: context_id, query_item, target_item (str); contexts in order of first
    appearance in the file, a context's pairs in their order (``last-item``: one pair per context).
    ``heldout``: every interaction removed from training as a target (validation and test), one row
    per (context, item): context_id, item_id (str), timestamp (int64, with timestamps only); by
    context as ``valid``, then engagement order. What :func:`pinsage.data.tags.allowed_tags` needs.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_input: int = 0
    n_duplicates: int = 0
    heldout: pd.DataFrame | None = None

    def summary(self) -> dict:
        return {
            "n_input_interactions": int(self.n_input),
            "n_duplicates_collapsed": int(self.n_duplicates),
            "n_train_interactions": int(len(self.train)),
            "n_train_contexts": int(self.train["context_id"].nunique()),
            "n_train_items": int(self.train["item_id"].nunique()),
            "n_valid_pairs": int(len(self.valid)),
            "n_test_pairs": int(len(self.test)),
        }


def _argsort_by(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Indices that sort by (hi, lo); ``lo`` holds distinct non-negative ints (ranks, positions).

    When both fit one int64 the pair is packed and sorted by value (SIMD sort, far faster than an
    argsort); since ``lo`` is distinct, the low bits identify each element. Else ``np.lexsort``.
    """
    m = len(hi)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(lo.max())
    bits = max(1, top.bit_length())
    if int(hi.min()) >= 0 and int(hi.max()) < (1 << (63 - bits)):
        packed = (hi.astype(np.int64) << bits) | lo.astype(np.int64)
        packed.sort()
        where = np.empty(top + 1, dtype=np.int64)
        where[lo] = np.arange(m, dtype=np.int64)
        return where[packed & ((1 << bits) - 1)]
    return np.lexsort((lo, hi))


def _last_of_runs(keys: np.ndarray) -> np.ndarray:
    """Mask of the last element of each run of equal values in ``keys``."""
    last = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return last


def held_out(order: np.ndarray, size: np.ndarray, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the validation and test targets, given each interaction's position in its context.

    Args:
        order: (M,) position within the context's sequence, 0 = oldest.
        size: (M,) the context's number of (distinct) interactions.
        protocol: ``tail`` or ``last-item`` (module docstring).
    Returns:
        (is_valid, is_test), (M,) bool each. Every target's query is the interaction right before it
        (``tail``) or at ``size - 3`` (``last-item``).
    """
    evaluated = size >= MIN_INTERACTIONS
    if protocol == "last-item":
        return evaluated & (order == size - 2), evaluated & (order == size - 1)
    if protocol != "tail":
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    h = np.maximum(2, np.rint(TAIL_SHARE * size).astype(np.int64))  # held out per context
    first = size - h  # position of the first held-out interaction (>= 1 since size >= 3)
    held = evaluated & (order >= first)
    is_valid = held & (order < first + h // 2)
    return is_valid, held & ~is_valid


@dataclass
class _Sequences:
    """Deduplicated interactions grouped by context, each context in engagement order.

    ``df``: the input in file order; ``seq``: (M,) positions into ``df``, by context then order;
    ``ctx`` / ``item``: (n,) codes of every input row (``ctx_uniques`` / ``item_uniques`` their ids);
    ``rank``: (n,) global engagement order of each row (time, ties by file order; or the seeded
    random rank without timestamps), comparable across contexts.
    """

    df: pd.DataFrame
    row: np.ndarray
    ctx: np.ndarray
    item: np.ndarray
    ctx_uniques: object
    item_uniques: object
    seq: np.ndarray
    rank: np.ndarray
    n_dup: int

    def ids(self, uniques, codes) -> pd.Series:
        return pd.Series(np.asarray(uniques, dtype=object).take(codes), dtype=str)


def _sequences(interactions: pd.DataFrame, has_timestamps: bool, seed: int) -> _Sequences:
    """Steps 1 and 2 of the module docstring: collapse repeats, order each context."""
    df = interactions.reset_index(drop=True)
    n = len(df)
    if has_timestamps and "timestamp" not in df.columns:
        raise ValueError("has_timestamps=True but interactions have no 'timestamp' column")
    if "row" in df.columns:
        row = df["row"].to_numpy(dtype=np.int64)
        if n > 1 and not (row[1:] >= row[:-1]).all():  # put the frame in file order first
            df = df.iloc[np.argsort(row, kind="stable")].reset_index(drop=True)
            row = df["row"].to_numpy(dtype=np.int64)
    else:
        row = np.arange(n, dtype=np.int64)
    # from here on positions 0..n-1 are in file order, so a stable sort breaks ties by file order
    ctx, ctx_uniques = pd.factorize(df["context_id"], sort=False)
    item, item_uniques = pd.factorize(df["item_id"], sort=False)
    ctx = ctx.astype(np.int64)
    item = item.astype(np.int64)
    n_item = max(len(item_uniques), 1)

    pos = np.arange(n, dtype=np.int64)  # file order
    pair = ctx * n_item + item  # one int per (context, item)
    if has_timestamps:
        ts = df["timestamp"].to_numpy(dtype=np.int64)
        by_time = _argsort_by(ts - (int(ts.min()) if n else 0), pos)  # time, then file order
        rank = np.empty(n, dtype=np.int64)
        rank[by_time] = pos  # 0 = oldest
        # collapse repeated (context, item): keep the latest, ties by file order
        d = _argsort_by(pair, rank)
        kept = d[_last_of_runs(pair[d])]
        seq = kept[_argsort_by(ctx[kept], rank[kept])]  # by context, then time
    else:
        d = _argsort_by(pair, pos)
        kept = np.sort(d[_last_of_runs(pair[d])])  # last in file order, listed in file order
        rng = np.random.default_rng(seed)
        kept_rank = rng.permutation(len(kept)).astype(np.int64)  # drawn in file order
        rank = np.full(n, -1, dtype=np.int64)  # collapsed repeats have none
        rank[kept] = kept_rank
        seq = kept[_argsort_by(ctx[kept], kept_rank)]  # by context, then the random rank
    return _Sequences(df, row, ctx, item, ctx_uniques, item_uniques, seq, rank, n - len(seq))


def split_interactions(interactions: pd.DataFrame, has_timestamps: bool, seed: int = 0,
                       protocol: str = "tail") -> Split:
    """Split interactions by the fixed protocol (module docstring).

    Args:
        interactions: at least ``context_id`` and ``item_id``; ``timestamp`` when
            ``has_timestamps``; ``row`` (0-based file order; taken as the current order if absent).
        has_timestamps: order by ``timestamp`` (True) or by a seeded random permutation (False).
        seed: seed of the random order; unused with timestamps.
        protocol: ``tail`` (default) or ``last-item``: which interactions become evaluation pairs.

    Raises:
        DatasetError: when no context has at least 3 distinct items, so nothing can be held out.
    """
    sq = _sequences(interactions, has_timestamps, seed)
    df, row, ctx, item, seq = sq.df, sq.row, sq.ctx, sq.item, sq.seq
    ctx_uniques, item_uniques, n, n_dup = sq.ctx_uniques, sq.item_uniques, len(sq.df), sq.n_dup

    c = ctx[seq]
    counts = np.bincount(c, minlength=len(ctx_uniques))
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    order = np.arange(len(seq), dtype=np.int64) - starts[c]
    size = counts[c]
    is_valid, is_test = held_out(order, size, protocol)
    if not is_test.any():
        raise DatasetError(
            f"no context has at least {MIN_INTERACTIONS} interactions (after collapsing repeated "
            f"context/item pairs; {len(counts)} contexts, at most {int(counts.max(initial=0))} "
            "items each), so no validation/test pair can be held out")

    # positions in seq are grouped by context (first-appearance order), then by order: a target at
    # position p has its query at p - 1 (tail) or at the context's size - 3 (last-item)
    at = np.arange(len(seq), dtype=np.int64)
    query_at = at - 1 if protocol == "tail" else at - order + size - 3

    ids = sq.ids

    def pairs(mask: np.ndarray) -> pd.DataFrame:
        targets, queries = seq[mask], seq[query_at[mask]]
        return pd.DataFrame({"context_id": ids(ctx_uniques, ctx[targets]),
                             "query_item": ids(item_uniques, item[queries]),
                             "target_item": ids(item_uniques, item[targets])})

    valid, test = pairs(is_valid), pairs(is_test)
    held = seq[is_valid | is_test]
    heldout = pd.DataFrame({"context_id": ids(ctx_uniques, ctx[held]), "item_id": ids(item_uniques, item[held])})
    if has_timestamps:
        heldout["timestamp"] = df["timestamp"].to_numpy(dtype=np.int64)[held]

    # back to file order: positions are file order, so a boolean mask keeps it (and is fast)
    train_mask = np.zeros(n, dtype=bool)  # collapsed duplicates and held-out rows stay False
    train_mask[seq[~(is_test | is_valid)]] = True
    order_by_pos = np.empty(n, dtype=np.int64)
    order_by_pos[seq] = order
    train = pd.DataFrame({c: df[c].array[train_mask] for c in df.columns})
    if "row" not in train.columns:
        train["row"] = row[train_mask]
    train["order"] = order_by_pos[train_mask]
    return Split(train=train, valid=valid, test=test, n_input=n, n_duplicates=n_dup, heldout=heldout)


DIRECTIONS = ("to-new", "from-new")  # new-items pairs: a new item as the target, or as the query
NEW_ITEM_SHARE = 0.1  # new-items: the seeded share of the items with interactions that arrive new


@dataclass
class NewItemsSplit:
    """The ``new-items`` protocol (docs/evaluation.md): items that arrive after training, with r revealed.

    ``train``: the input rows of every item that is not new (deduplicated, file order): what the
    model and every baseline are trained on. ``arrivals``: one row per interaction of a new item
    (input columns plus ``k``, its rank among that item's interactions in engagement order, 0 =
    first; ``query_item`` and ``next_item``, the items engaged right before and right after it in the
    same context, '' when none; and ``split``, the half of the new items it belongs to: 'valid' or
    'test'). ``new_items``: item_id and split of every new item.
    """

    train: pd.DataFrame
    arrivals: pd.DataFrame
    new_items: pd.DataFrame

    def revealed(self, r: int) -> pd.DataFrame:
        """The first ``r`` interactions of every new item (input columns): they join the graph."""
        return self.arrivals.loc[self.arrivals["k"] < r, list(self.train.columns)]

    def pairs(self, r: int, split: str, direction: str = "to-new") -> pd.DataFrame:
        """Evaluation pairs at ``r`` from every later interaction (k >= r) of a ``split`` new item.

        ``to-new``: query = the item engaged right before it in its context, target = the new item
        (does a new item surface in an existing item's list?). ``from-new``: query = the new item,
        target = the item engaged right after it (the new item's own page). Pairs whose other item
        is missing or new itself are dropped.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        new = set(self.new_items["item_id"])
        a = self.arrivals
        other = a["query_item"] if direction == "to-new" else a["next_item"]
        keep = (a["k"] >= r) & (a["split"] == split) & (other != "") & ~other.isin(new)
        if direction == "to-new":
            return a.loc[keep, PAIR_COLUMNS].reset_index(drop=True)
        return pd.DataFrame({"context_id": a.loc[keep, "context_id"].to_numpy(),
                             "query_item": a.loc[keep, "item_id"].astype(str).to_numpy(),
                             "target_item": a.loc[keep, "next_item"].to_numpy()})


def split_new_items(interactions: pd.DataFrame, has_timestamps: bool, seed: int = 0,
                    share: float = NEW_ITEM_SHARE, new_items=None) -> NewItemsSplit:
    """A seeded ``share`` of the items with interactions become new (or exactly ``new_items``, ids);
    all their interactions leave training. The new items are halved at random into validation and
    test items.

    Order within contexts (for the queries) and among a new item's interactions (for ``k``) is the
    engagement order of the module docstring: time, ties by file order; without timestamps the
    seeded random order.
    """
    sq = _sequences(interactions, has_timestamps, seed)
    seq = sq.seq
    rng = np.random.default_rng([seed, 19])
    active = np.unique(sq.item[seq])  # item codes with interactions
    if new_items is None:
        n_new = int(round(share * len(active)))
        new_codes = rng.choice(active, n_new, replace=False) if n_new >= 2 else active[:0]
    else:
        code_of = {str(v): i for i, v in enumerate(sq.item_uniques)}
        new_codes = np.array(sorted({code_of[str(v)] for v in new_items if str(v) in code_of}), dtype=np.int64)
        n_new = len(new_codes)
    if n_new < 2:
        raise DatasetError(f"new-items protocol: {len(active)} items with interactions give {n_new} new "
                           f"items; expected at least 2 (one validation, one test item)")
    is_new = np.zeros(max(len(sq.item_uniques), 1), dtype=bool)
    is_new[new_codes] = True
    half = np.zeros_like(is_new)  # True: a test item
    half[rng.permutation(new_codes)[n_new // 2:]] = True

    c = sq.ctx[seq]
    first = np.r_[True, c[1:] != c[:-1]]  # the first interaction of its context has no query
    query = np.where(first, -1, np.r_[-1, sq.item[seq][:-1]])  # (M,) item code engaged right before
    last = np.r_[c[1:] != c[:-1], True]  # the last interaction of its context has no next item
    after = np.where(last, -1, np.r_[sq.item[seq][1:], -1])  # (M,) item code engaged right after
    new_at = np.flatnonzero(is_new[sq.item[seq]])  # positions in seq of the new items' interactions
    rows = seq[new_at]
    item_codes = sq.item[rows]
    by_item = _argsort_by(item_codes, sq.rank[rows])  # each new item's interactions in engagement order
    starts = np.r_[True, item_codes[by_item][1:] != item_codes[by_item][:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(by_item)), 0))
    k = np.empty(len(rows), dtype=np.int64)
    k[by_item] = np.arange(len(by_item)) - group_start

    df = sq.df
    columns = [col for col in df.columns if col != "row"]
    arrivals = pd.DataFrame({col: df[col].array[rows] for col in columns})
    arrivals["k"] = k
    q = query[new_at]
    arrivals["query_item"] = np.where(q >= 0, sq.ids(sq.item_uniques, np.maximum(q, 0)).to_numpy(), "")
    nxt = after[new_at]
    arrivals["next_item"] = np.where(nxt >= 0, sq.ids(sq.item_uniques, np.maximum(nxt, 0)).to_numpy(), "")
    arrivals["target_item"] = arrivals["item_id"].astype(str)
    arrivals["split"] = np.where(half[item_codes], "test", "valid")
    arrivals = arrivals.sort_values(["item_id", "k"], kind="stable").reset_index(drop=True)

    keep = np.zeros(len(df), dtype=bool)
    keep[seq] = ~is_new[sq.item[seq]]
    train = pd.DataFrame({col: df[col].array[keep] for col in columns})
    new_items = pd.DataFrame({"item_id": sq.ids(sq.item_uniques, np.sort(new_codes)),
                              "split": np.where(half[np.sort(new_codes)], "test", "valid")})
    return NewItemsSplit(train=train, arrivals=arrivals, new_items=new_items)
