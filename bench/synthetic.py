"""Seeded synthetic power-law bipartite graphs and item features for benchmarks.

Item and context popularity follow a (truncated, continuous) Zipf law: the r-th most popular node
of a side is drawn with probability ~ r^-alpha. Edges are i.i.d. (item, context) draws; popularity
ranks are mapped to node indices through a random permutation, so popular nodes are scattered over
the index range (as in real catalogues) rather than packed at low indices, which would flatter
cache locality.

Duplicate (item, context) pairs are removed and topped up with fresh draws for a few rounds, so the
graph has exactly ``n_edges`` distinct edges unless the two popularity laws make that many distinct
pairs unlikely (e.g. ``n_edges`` near ``n_items * n_contexts`` or a very steep alpha); then it has
somewhat fewer. ``n_edges`` is therefore a target, not a guarantee.

Usage from the repo root: ``from bench.synthetic import synthetic_graph``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `pinsage` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinsage.graph.bipartite import BipartiteGraph, build_graph  # noqa: E402

_TOP_UP_ROUNDS = 4


def _zipf_ranks(rng: np.random.Generator, n: int, size: int, alpha: float) -> np.ndarray:
    """``size`` ranks in [0, n) with P(rank r) ~ (r + 1)^-alpha, by inverting the continuous CDF."""
    u = rng.random(size)
    if abs(alpha - 1.0) < 1e-9:
        x = np.exp(u * np.log(n + 1.0))  # density 1/x on [1, n + 1)
    else:
        e = 1.0 - alpha
        x = (u * ((n + 1.0) ** e - 1.0) + 1.0) ** (1.0 / e)  # density x^-alpha on [1, n + 1)
    return np.minimum(x.astype(np.int64) - 1, n - 1)


def power_law_bipartite(n_items: int, n_contexts: int, n_edges: int, seed: int,
                        alpha: float = 0.8,
                        context_alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (item, context) edges with power-law popularity on both sides.

    Args:
        n_items, n_contexts: sizes of the two sides.
        n_edges: target number of distinct edges (see module docstring: may come out lower).
        seed: all randomness derives from it.
        alpha: Zipf exponent of item popularity (0 = uniform; ~0.8 gives a long-tail catalogue).
        context_alpha: exponent for contexts; ``alpha`` when None.

    Returns:
        (item_index, context_index): (E,) int64 arrays, E <= n_edges, sorted by (item, context).
    """
    if n_items <= 0 or n_contexts <= 0 or n_edges < 0:
        raise ValueError("n_items and n_contexts must be positive and n_edges non-negative")
    context_alpha = alpha if context_alpha is None else context_alpha
    rng = np.random.default_rng(seed)
    item_perm = rng.permutation(n_items)
    context_perm = rng.permutation(n_contexts)
    n_target = min(int(n_edges), n_items * n_contexts)

    keys = np.empty(0, dtype=np.int64)  # item * n_contexts + context, distinct (sorted)
    want = n_target
    for _ in range(_TOP_UP_ROUNDS):
        if want <= 0:
            break
        items = item_perm[_zipf_ranks(rng, n_items, want, alpha)]
        contexts = context_perm[_zipf_ranks(rng, n_contexts, want, context_alpha)]
        keys = np.concatenate([keys, items * np.int64(n_contexts) + contexts])
        keys.sort()
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # np.unique, but faster
        missing = n_target - len(keys)
        if missing <= 0:
            break
        # next round oversamples by the observed duplicate rate so it usually closes the gap
        want = int(missing * min(8.0, max(1.0, want / max(1, want - missing))) * 1.1) + 16
    if len(keys) > n_target:  # overshoot of the last round: drop a random subset
        keys = keys[np.sort(rng.choice(len(keys), n_target, replace=False))]
    return keys // n_contexts, keys % n_contexts


def synthetic_graph(n_items: int, n_contexts: int, n_edges: int, seed: int = 0,
                    alpha: float = 0.8, context_alpha: float | None = None,
                    weighted: bool = False) -> BipartiteGraph:
    """:func:`power_law_bipartite` as a :class:`BipartiteGraph`.

    ``weighted=True`` attaches log-normal edge weights (median 1, a few heavy edges), which sends
    the random walks down the cumulative-weight sampling path.
    """
    items, contexts = power_law_bipartite(n_items, n_contexts, n_edges, seed, alpha, context_alpha)
    weights = None
    if weighted:
        rng = np.random.default_rng([seed, 1])
        weights = rng.lognormal(0.0, 0.75, size=len(items)).astype(np.float32)
    return build_graph(items, contexts, n_items, n_contexts, weights)


def synthetic_features(n_items: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n_items, dim) float32 i.i.d. standard-normal item features."""
    rng = np.random.default_rng([seed, 2])
    return rng.standard_normal((n_items, dim), dtype=np.float32)



def write_synthetic_dataset(directory: str | Path, n_items: int, n_interactions: int, seed: int = 0,
                            items_per_context: int = 100, n_topics: int | None = None) -> Path:
    """A contract-format dataset (``items.csv``, ``interactions.csv``) with structure to learn.

    Items belong to latent topics (``n_topics``, default ``n_items / 250``); each item's text holds
    two of its topic's words and two random ones, so content is informative but noisy. Each context
    prefers two topics: a step of its time-ordered history stays in the current topic with
    probability 0.6, switches to the other preferred topic with 0.3, or picks any item with 0.1;
    within a topic items follow a Zipf (alpha 0.8) popularity, so the catalogue has a long tail and
    consecutive items are related, as in a real session. Timestamps increase along each history.
    A history repeats no item (repeats are redrawn), so the count is close to, not exactly, the asked one.

    Returns the dataset directory.
    """
    import pandas as pd

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 3])
    n_topics = n_topics or max(2, n_items // 250)
    topic = rng.integers(0, n_topics, n_items)  # (N,) topic of each item
    members = [np.flatnonzero(topic == t) for t in range(n_topics)]
    members = [m if len(m) else rng.integers(0, n_items, 1) for m in members]
    popularity = [(np.arange(1, len(m) + 1) ** -0.8) / np.sum(np.arange(1, len(m) + 1) ** -0.8) for m in members]
    vocab = np.array([f"w{t}_{j}" for t in range(n_topics) for j in range(8)]).reshape(n_topics, 8)
    text = [" ".join([*rng.choice(vocab[topic[i]], 2, replace=False), *rng.choice(vocab.ravel(), 2)])
            for i in range(n_items)]
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "title": [f"item {i}" for i in range(n_items)],
                  "text": text}).to_csv(directory / "items.csv", index=False)
    n_contexts = max(1, n_interactions // items_per_context)
    rows_c, rows_i, rows_t = [], [], []
    for c in range(n_contexts):
        length = max(3, int(rng.poisson(items_per_context)))
        prefs = rng.choice(n_topics, 2, replace=False) if n_topics > 1 else np.zeros(2, np.int64)
        current, seen, step = 0, set(), 0
        for _ in range(5 * length):  # redraw repeats; a history of distinct items
            if step == length:
                break
            u = rng.random()
            current = current if u < 0.6 else 1 - current
            if u >= 0.9:
                item = int(rng.integers(0, n_items))
            else:
                t = prefs[current]
                item = int(members[t][rng.choice(len(members[t]), p=popularity[t])])
            if item in seen:
                continue
            seen.add(item)
            rows_c.append(c), rows_i.append(item), rows_t.append(1_600_000_000 + c * 1000 + step)
            step += 1
    pd.DataFrame({"context_id": [f"c{c}" for c in rows_c], "item_id": [f"i{i}" for i in rows_i],
                  "timestamp": rows_t}).to_csv(directory / "interactions.csv", index=False)
    return directory

if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    it, ct = power_law_bipartite(1_000_000, 500_000, 10_000_000, seed=0)
    dt = time.perf_counter() - t0
    g = build_graph(it, ct, 1_000_000, 500_000)
    deg = g.item_degree()
    print(f"{len(it):,} edges in {dt:.2f}s; item degree max {deg.max()}, median "
          f"{int(np.median(deg))}, isolated {(deg == 0).sum():,}; context degree max "
          f"{g.context_degree().max()}")


def synthetic_recommender(root: str | Path, n_items: int, dim: int = 128, seed: int = 0) -> dict:
    """What a registered version carries, for a catalogue of ``n_items`` seeded unit vectors: titles
    (``items.parquet``), ``embeddings/``, ``index/`` (with its answer table) and an untrained network
    of the default size (``model/``; serving never runs it). Returns the paths and the item ids."""
    import pyarrow as pa
    import torch

    from pinsage.export.embeddings import write_embeddings
    from pinsage.export.index import build_index, save_index
    from pinsage.model.network import ModelConfig, PinSage, save_model
    from pinsage.util.io import write_table

    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(n_items)])
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_table(root / "items.parquet", pa.table({"item_id": ids.tolist(),
                                                  "title": [f"item {k}" for k in range(n_items)]}))
    write_embeddings(root / "embeddings", ids, emb)
    save_index(root / "index", build_index(emb), ids, emb)
    torch.manual_seed(seed)
    save_model(PinSage(ModelConfig(input_dim=257, n_items=n_items, output_dim=dim)), root / "model")
    return {"model_dir": root / "model", "embeddings": root / "embeddings", "index": root / "index",
            "items": root / "items.parquet", "ids": ids}
