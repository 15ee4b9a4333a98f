"""Minibatch sampling: positive pairs, shared and hard negatives, and K-hop computation graphs.

This is the producer side of the paper's producer-consumer training (Section 3.3): CPU workers
build each minibatch's computation graph from the fixed importance-neighbour table, re-index it
densely and gather its features, while the consumer (GPU or CPU) runs the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .walks import Neighbors, VisitTable


@dataclass
class Block:
    """One convolution's bipartite slice: destinations are the first ``n_dst`` source nodes."""

    n_dst: int
    neighbors: np.ndarray  # (n_dst, T) int64 rows into the block's sources
    weights: np.ndarray  # (n_dst, T) float32 importance weights
    mask: np.ndarray  # (n_dst, T) bool


@dataclass
class TensorBlock:
    n_dst: int
    neighbors: torch.Tensor
    weights: torch.Tensor
    mask: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "TensorBlock":
        return TensorBlock(self.n_dst, self.neighbors.to(device, non_blocking=non_blocking),
                           self.weights.to(device, non_blocking=non_blocking),
                           self.mask.to(device, non_blocking=non_blocking))


def computation_graph(targets: np.ndarray, neighbors: Neighbors, n_layers: int):
    """The K-hop computation graph of ``targets`` (unique catalogue indices).

    Returns ``(input_nodes, blocks)``: ``input_nodes`` (N_0,) catalogue indices whose first
    ``len(targets)`` entries are ``targets`` in order; ``blocks`` from the input layer to the output.
    Each layer's nodes are deduplicated, so a node shared by many targets is computed once.
    """
    dst = np.asarray(targets, dtype=np.int64)
    n_items = len(neighbors.items)
    blocks: list[Block] = []
    for _ in range(n_layers):
        mask = neighbors.mask[dst]  # (n_dst, T)
        # Padded slots point at the destination itself: always present in the sources, weight 0.
        nbr = np.where(mask, neighbors.items[dst], dst[:, None]).astype(np.int64)  # (n_dst, T)
        if n_items <= 8 * nbr.size:
            # Dense marks over the catalogue: O(n_dst T + N), no sort of the n_dst T neighbour ids
            # (3x faster at the paper's T = 50 on a 500k-item catalogue); same output as below.
            is_dst = np.zeros(n_items, dtype=bool)
            is_dst[dst] = True
            seen = np.zeros(n_items, dtype=bool)
            seen[nbr[mask]] = True
            extra = np.flatnonzero(seen & ~is_dst)  # sorted new nodes
            src = np.concatenate([dst, extra])
            row = np.empty(n_items, dtype=np.int64)
            row[src] = np.arange(len(src))
            local = row[nbr]  # (n_dst, T) rows into src
        else:  # a catalogue far larger than the batch: sort only what the batch touches
            extra = np.setdiff1d(nbr[mask], dst)  # sorted new nodes
            src = np.concatenate([dst, extra])
            sorter = np.argsort(src, kind="stable")
            local = sorter[np.searchsorted(src, nbr, sorter=sorter)]  # (n_dst, T) rows into src
        blocks.append(Block(len(dst), local, neighbors.weights[dst].astype(np.float32), mask))
        dst = src
    blocks.reverse()
    return dst, blocks


def positive_pairs(context_codes: np.ndarray, item_codes: np.ndarray, window: int, ordered: bool,
                   rng: np.random.Generator, with_context: bool = False) -> np.ndarray:
    """One positive (query, item) pair per training interaction, resampled every epoch.

    Interactions must be grouped by context and, within a context, in engagement order.
    ``ordered`` (timestamps known): the partner is engaged within ``window`` steps before or after
    (paper: items engaged one after the other). Otherwise the partner is any other item of the
    same context (co-occurrence). Contexts of a single item give no pair.

    Returns:
        (P, 2) int64 catalogue indices, or (P, 3) with the pair's context code as a third column.
    """
    n = len(item_codes)
    if n == 0:
        return np.zeros((0, 3 if with_context else 2), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, context_codes[1:] != context_codes[:-1]])
    lengths = np.diff(np.r_[starts, n])
    start = np.repeat(starts, lengths)  # (n,) first row of each row's context
    length = np.repeat(lengths, lengths)  # (n,)
    pos = np.arange(n) - start
    keep = length > 1
    if ordered:
        step = rng.integers(1, window + 1, size=n) * np.where(rng.random(n) < 0.5, -1, 1)
        partner = pos + step
        # Reflect steps that leave the sequence so every interaction still gets a partner.
        partner = np.where((partner < 0) | (partner >= length), pos - step, partner)
        partner = np.clip(partner, 0, length - 1)
        keep &= partner != pos
    else:
        partner = (pos + rng.integers(1, np.maximum(length, 2), size=n)) % np.maximum(length, 1)
    rows = np.flatnonzero(keep)
    columns = [item_codes[rows], item_codes[start[rows] + partner[rows]]]
    return np.stack(columns + ([context_codes[rows]] if with_context else []), axis=1).astype(np.int64)


def hard_negative_band(n_items: int, reach: int | None = None) -> tuple[int, int]:
    """PPR rank band for hard negatives, scaled to the catalogue.

    The paper samples ranks 2000-5000 of a 3-billion-item catalogue: far enough down to be unrelated,
    close enough to be confusable. A literal copy would be the whole of a small catalogue, so the
    band is 2%-5% of the catalogue, capped at the paper's absolute ranks.

    ``reach``: the most distinct items the walks can visit from one source (walks per item x
    maximum walk length). Ranks beyond it do not exist, so a band past it is moved to the upper half
    of the reachable ranks instead of being stored as padding: at 500k items the uncapped band would
    need an N x 5000 visit table (20 GB) holding nothing but fallbacks to random items.
    """
    lo = min(2000, max(1, math.ceil(0.02 * n_items)))
    hi = min(5000, max(lo + 1, math.ceil(0.05 * n_items)))
    if reach is not None and hi > reach:
        hi = max(2, reach)
        lo = min(lo, max(1, hi // 2))
    return lo, hi


@dataclass
class SamplerConfig:
    batch_size: int = 512  # paper: 512 per GPU
    n_shared_negatives: int = 500  # paper: 500 negatives shared by the minibatch
    hard_negatives: bool = True  # curriculum: epoch e adds e-1 hard negatives per query (paper)
    max_hard_negatives: int = 6  # cap for long runs (the paper trains few epochs)
    positive_window: int = 3  # engagement steps counted as "one after the other"
    negatives_from: str = "trained"  # items with training interactions ("catalogue": every item); see README
    negative_power: float = 0.0  # negatives drawn with P ~ degree^power (0: uniform; word2vec uses 0.75)


class MinibatchProducer(torch.utils.data.IterableDataset):
    """Yields ready-to-train minibatches of one epoch; run inside DataLoader workers.

    Every batch has its own RNG seeded by (seed, epoch, batch number), so the stream is the same for
    any number of workers and a resumed run repeats an uninterrupted one exactly.

    Data-parallel training (``rank`` of ``world_size`` processes) splits every minibatch, not the
    epoch: each process draws the whole batch (same queries, shared and hard negatives) and keeps its
    share of the queries, so the averaged gradient is the single-process one and the learning-rate
    schedule does not depend on the number of processes. ``batch_size`` is the global batch.

    Hold-out neighbourhoods: with ``fold_neighbors`` (one table per fold of contexts, each walked
    without that fold's contexts), ``pairs`` carry the fold of their context as a third column and
    every minibatch holds pairs of one fold only, so its computation graph is built from the table
    that never saw the queries' own contexts.
    """

    def __init__(self, pairs: np.ndarray, features: np.ndarray, neighbors: Neighbors,
                 visits: VisitTable | None, config: SamplerConfig, epoch: int, seed: int,
                 candidate_items: np.ndarray, n_layers: int, candidate_weights: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1, fold_neighbors: list[Neighbors] | None = None):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size
        self.pairs = pairs
        self.features = features
        self.neighbors = neighbors
        self.visits = visits
        self.config = config
        self.epoch = epoch
        self.seed = seed
        self.candidates = candidate_items
        # cumulative weights for O(log N) weighted draws; None draws uniformly
        self.candidate_cdf = None if candidate_weights is None else np.cumsum(candidate_weights, dtype=np.float64)
        self.n_layers = n_layers  # K of the model: the computation graph has K hops
        self.fold_neighbors = fold_neighbors
        if fold_neighbors is not None and (pairs.ndim != 2 or pairs.shape[1] != 3):
            raise ValueError("with fold_neighbors, pairs must be (P, 3): query, positive, fold")
        self.order, self.batch_bounds = self._batches(epoch, seed)
        self.n_batches = len(self.batch_bounds)
        self.band = hard_negative_band(len(features), None if visits is None else visits.items.shape[1])

    def __len__(self) -> int:
        return self.n_batches

    def _batches(self, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Row order and (n_batches, 2) [start, stop) into it: consecutive chunks of ``pairs``, or with
        folds the chunks of each fold (pairs keep their shuffled order within it) in a seeded order."""
        bs, n = self.config.batch_size, len(self.pairs)
        if self.fold_neighbors is None:
            starts = np.arange(0, n, bs)
            return np.arange(n), np.stack([starts, np.minimum(starts + bs, n)], axis=1)
        fold = self.pairs[:, 2]
        order = np.argsort(fold, kind="stable")
        edges = np.searchsorted(fold[order], np.arange(len(self.fold_neighbors) + 1))  # fold f: [edges[f], edges[f+1])
        bounds = [(s, min(s + bs, hi)) for lo, hi in zip(edges[:-1], edges[1:]) for s in range(lo, hi, bs)]
        bounds = np.array(bounds, dtype=np.int64).reshape(-1, 2)
        return order, bounds[np.random.default_rng([seed, epoch, 2]).permutation(len(bounds))]

    def n_hard(self) -> int:
        if not self.config.hard_negatives or self.visits is None:
            return 0
        return min(self.epoch, self.config.max_hard_negatives)  # epoch is 0-based: epoch e+1 adds e

    def _hard_negatives(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = self.n_hard()
        lo, hi = self.band
        lo = min(lo, self.visits.items.shape[1] - 1)
        ranks = rng.integers(lo, max(hi, lo + 1), size=(len(queries), k))
        ranks = np.minimum(ranks, self.visits.items.shape[1] - 1)
        picked = self.visits.items[queries[:, None], ranks].astype(np.int64)  # (B, k)
        # Where the walks never reached that deep, fall back to a random item.
        missing = picked < 0
        picked[missing] = rng.choice(self.candidates, size=int(missing.sum()))
        return picked

    def make_batch(self, b: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, b])
        start, stop = self.batch_bounds[b]
        chunk = self.pairs[self.order[start:stop]]
        queries, positives = chunk[:, 0], chunk[:, 1]
        neighbors = self.neighbors if self.fold_neighbors is None else self.fold_neighbors[int(chunk[0, 2])]
        if self.candidate_cdf is None:
            negatives = rng.choice(self.candidates, size=self.config.n_shared_negatives)
        else:
            u = rng.random(self.config.n_shared_negatives) * self.candidate_cdf[-1]
            negatives = self.candidates[np.searchsorted(self.candidate_cdf, u, side="right")]
        hard = (self._hard_negatives(queries, rng) if self.n_hard() > 0
                else np.zeros((len(queries), 0), dtype=np.int64))
        n_batch = len(queries)
        if self.world_size > 1:  # this process's share of the global batch (drawn whole above)
            share = np.array_split(np.arange(n_batch), self.world_size)[self.rank]
            queries, positives, hard = queries[share], positives[share], hard[share]
        wanted = np.concatenate([queries, positives, negatives, hard.reshape(-1)])
        targets, inverse = np.unique(wanted, return_inverse=True)
        input_nodes, blocks = computation_graph(targets, neighbors, self.n_layers)
        nq, nn_ = len(queries), len(negatives)
        return {
            "x": torch.from_numpy(self.features[input_nodes]),  # (N_0, F)
            "item_index": torch.from_numpy(input_nodes),  # (N_0,)
            "blocks": [TensorBlock(blk.n_dst, torch.from_numpy(blk.neighbors),
                                   torch.from_numpy(blk.weights), torch.from_numpy(blk.mask))
                       for blk in blocks],
            "query": torch.from_numpy(inverse[:nq]),  # (B,) rows into the model output
            "positive": torch.from_numpy(inverse[nq:2 * nq]),  # (B,)
            "negative": torch.from_numpy(inverse[2 * nq:2 * nq + nn_]),  # (N_neg,)
            "hard": torch.from_numpy(inverse[2 * nq + nn_:].reshape(nq, hard.shape[1])),  # (B, H)
            "positive_item": torch.from_numpy(positives),
            "negative_item": torch.from_numpy(negatives),
            "hard_item": torch.from_numpy(hard),
            "share": len(queries) / n_batch,  # fraction of the global batch: weights this process's loss
        }

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for b in range(worker, self.n_batches, n_workers):
            yield self.make_batch(b)


def collate_identity(batch):
    """Batches are built whole by the producer; DataLoader must not re-batch them."""
    return batch
