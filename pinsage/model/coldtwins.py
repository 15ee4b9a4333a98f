"""Cold twins: every catalogue item as the cold-start path would see it new, for training.

The twin of catalogue item i is row ``N + i`` of the producer's graph (:class:`~pinsage.model.sampler.
MinibatchProducer`): no id vector, its degree unknown, and the neighbourhood :mod:`pinsage.serve.coldstart`
would give a new item, built from a few of its own training interactions and its content. A share of
the training pairs (``SamplerConfig.cold_share``) swaps one side for its twin, so the state new items
are embedded in is trained (DropoutNet's idea, Volkovs et al., NeurIPS 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinsage.features.build import content_blocks, degree_column
from pinsage.graph.content import beside_first, content_neighbors, content_vectors, engaged_beside, rank_profile
from pinsage.graph.neighbors import Neighbors


@dataclass
class ColdTwins:
    """What the cold twin of catalogue item i (row ``N + i`` of the producer's graph) is made of."""

    neighbors: Neighbors  # (N, T) the twins' neighbourhoods: engaged beside, then content; never the item itself
    degree_column: int | None  # the log-degree column of the features (None: no degree input)
    unknown_degree: float  # what an unknown degree reads: the catalogue mean (0 once standardised)


MAX_REVEALED = 3  # a twin sees 0..3 of its own interactions, as a new item in its first days


def cold_twins(table, walks: Neighbors, context: np.ndarray, item: np.ndarray, window: int, ordered: bool,
               seed: int) -> ColdTwins:
    """The cold twins of a catalogue (``SamplerConfig.cold_share``): what the cold-start path gives a
    new item (:mod:`pinsage.serve.coldstart`), built from the training data.

    Each item's twin sees r of its own interactions (r seeded, uniform in 0..``MAX_REVEALED``; which
    ones at random): its neighbourhood is the items engaged beside those (``window``, ``ordered`` as
    the loss's positives), then its content neighbours among the items with a walk neighbourhood
    (never itself); its degree input reads the catalogue mean (unknown).

    Args:
        table: the feature table; walks: the walk neighbourhoods (candidates and the rank profile);
        context, item: (M,) training interactions grouped by context in engagement order.
    """
    n = len(walks.items)
    rng = np.random.default_rng([seed, 29])
    trained = np.flatnonzero(walks.mask.any(axis=1))
    profile = rank_profile(walks)
    vectors = content_vectors(content_blocks(table), trained)
    content = content_neighbors(vectors, np.arange(n), trained, profile, seed=seed)
    revealed = rng.integers(0, MAX_REVEALED + 1, size=n)  # (N,) interactions each twin sees
    key = rng.random(len(item))
    by_item = np.lexsort((key, item))  # each item's interactions in a random order
    sorted_items = item[by_item]
    first = np.searchsorted(sorted_items, sorted_items)  # start of each item's run
    rank = np.empty(len(item), dtype=np.int64)
    rank[by_item] = np.arange(len(item)) - first
    sources, partners = engaged_beside(context, item, rank < revealed[item], window, ordered)
    neighbourhoods = beside_first(sources, partners, np.arange(n), content, profile, seed)
    col = degree_column(table)
    unknown = 0.0 if col is None else float(table.column("log_degree").to_numpy().astype(np.float32).mean())
    return ColdTwins(neighbourhoods, col, unknown)
