"""Minibatch sampling: positive pairs, shared and hard negatives, and K-hop computation graphs.

This is the producer side of the paper's producer-consumer training (Section 3.3): CPU workers
build each minibatch's computation graph from the fixed importance-neighbour table, re-index it
densely and gather its features, while the consumer (GPU or CPU) runs the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from pinsage.graph.neighbors import Neighbors, VisitTable
from pinsage.graph.walks import WalkConfig
from pinsage.model.coldtwins import ColdTwins


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


def computation_graph(targets: np.ndarray, neighbors: Neighbors, n_layers: int,
                      full: np.ndarray | None = None):
    """The K-hop computation graph of ``targets`` (unique catalogue indices).

    Returns ``(input_nodes, blocks)``: ``input_nodes`` (N_0,) catalogue indices whose first
    ``len(targets)`` entries are ``targets`` in order; ``blocks`` from the input layer to the output.
    Each layer's nodes are deduplicated, so a node shared by many targets is computed once.

    ``full``: the catalogue items a minibatch can reach (:func:`reachable_items`, sorted; they must
    hold the targets' neighbours). Every layer below the output is then all of them (targets first, then the rest
    in index order), so a step computes each item's lower-layer vectors once, with gradients, without
    tracing which of them the targets reach. The targets' outputs are the sampled graph's to float
    rounding: the same vectors feed them, only more are computed (:func:`full_pass_pays`).
    """
    if full is not None:
        return _full_graph(np.asarray(targets, dtype=np.int64), neighbors, n_layers, full)
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


def reachable_items(neighbors: Neighbors, candidates: np.ndarray) -> np.ndarray:
    """(R,) sorted catalogue indices a minibatch can touch: the negative candidates, every item with
    neighbours (queries, positives and hard negatives have some) and every neighbour of those.
    Items outside (no training interaction, never a negative) are never computed by the full pass."""
    return np.union1d(np.union1d(candidates, np.flatnonzero(neighbors.mask.any(axis=1))),
                      neighbors.items[neighbors.mask])


def _full_graph(targets: np.ndarray, neighbors: Neighbors, n_layers: int, reachable: np.ndarray):
    """``computation_graph(full=...)``: the output block convolves the targets, every block below it
    all ``reachable`` items, over one node order (targets first)."""
    if n_layers == 0:
        return targets, []
    n_items = len(neighbors.items)
    rest = np.zeros(n_items, dtype=bool)
    rest[reachable] = True
    # a target outside ``reachable`` (a cold twin, row >= N) is computed too (targets come first), as
    # long as its neighbours are reachable
    if not rest[neighbors.items[targets][neighbors.mask[targets]]].all():
        raise ValueError("full computation graph: a target's neighbour is not among the reachable items")
    rest[targets] = False
    nodes = np.concatenate([targets, np.flatnonzero(rest)])  # (R,) the reachable items, targets first
    row = np.full(n_items, -1, dtype=np.int64)
    row[nodes] = np.arange(len(nodes))
    blocks = []
    for k in range(n_layers):
        dst = nodes if k < n_layers - 1 else targets
        mask = neighbors.mask[dst]  # (n_dst, T)
        local = np.where(mask, row[neighbors.items[dst]], row[dst][:, None])  # (n_dst, T) rows into nodes
        blocks.append(Block(len(dst), local, neighbors.weights[dst].astype(np.float32), mask))
    return nodes, blocks


FULL_PASS_COVERAGE = 0.9  # a sampled batch reaching this share of the reachable items switches to the full pass


def full_pass_pays(sampled_inputs: int, n_reachable: int) -> bool:
    """Whether the full-catalogue graph replaces the sampled one. A step costs in proportion to its
    input nodes, and tracing a sampled graph is only 4-9% of a step (bench/bench_train_step.py,
    docs/figures.md "Training cost"), so the full pass pays only once a sampled batch already
    reaches nearly every reachable item (``FULL_PASS_COVERAGE``): at the paper's batch of 512 a
    sampled batch reaches 79-88% of them on ml-latest-small and 76-86% on lastfm-2k, where the full
    pass costs 6-30% more per step; on the 10,000-item synthetic catalogue it reaches 98%."""
    return sampled_inputs >= FULL_PASS_COVERAGE * n_reachable


def positive_pairs(context_codes: np.ndarray, item_codes: np.ndarray, window: int, ordered: bool,
                   rng: np.random.Generator) -> np.ndarray:
    """One positive (query, item) pair per training interaction, resampled every epoch.

    Interactions must be grouped by context and, within a context, in engagement order.
    ``ordered`` (timestamps known): the partner is engaged within ``window`` steps before or after
    (paper: items engaged one after the other). Otherwise the partner is any other item of the
    same context (co-occurrence). Contexts of a single item give no pair.

    Returns:
        (P, 2) int64 catalogue indices.
    """
    n = len(item_codes)
    if n == 0:
        return np.zeros((0, 2), dtype=np.int64)
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
    return np.stack([item_codes[rows], item_codes[start[rows] + partner[rows]]], axis=1).astype(np.int64)


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
class Minibatch:
    """One training step's inputs. Index tensors are rows into the model's output (its targets)."""

    x: torch.Tensor  # (N_0, F) features of every input node of the computation graph
    item_index: torch.Tensor  # (N_0,) their catalogue indices (id embeddings); -1: a cold twin, no id
    blocks: list  # K TensorBlocks, input layer first
    query: torch.Tensor  # (B,)
    positive: torch.Tensor  # (B,)
    negative: torch.Tensor  # (N_neg,) shared by the batch
    hard: torch.Tensor  # (B, H) per-query hard negatives
    positive_item: torch.Tensor  # (B,) catalogue indices: a negative equal to the positive is masked
    negative_item: torch.Tensor  # (N_neg,)
    hard_item: torch.Tensor  # (B, H)
    positive_cold: torch.Tensor  # (B,) bool: the positive is a cold twin (its score gets the cold offset)
    negative_cold: torch.Tensor  # (N_neg,) bool
    share: float  # this process's fraction of the global batch: weights its loss under DDP

    def to(self, device: torch.device) -> "Minibatch":
        nb = device.type == "cuda"
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in moved.items()}
        moved["blocks"] = [blk.to(device, non_blocking=nb) for blk in self.blocks]
        return Minibatch(**moved)


@dataclass
class SamplerConfig:
    # paper: 512 per GPU. Larger batches make an epoch cheaper but learn less per second on sparse
    # catalogues (fewer updates of each id vector; docs/figures.md, "Training cost")
    batch_size: int = 512
    n_shared_negatives: int = 500  # paper: 500 negatives shared by the minibatch
    hard_negatives: bool = True  # curriculum: epoch e adds e-1 hard negatives per query (paper)
    max_hard_negatives: int = 6  # cap for long runs (the paper trains few epochs)
    positive_window: int = 3  # engagement steps counted as "one after the other"
    # items with training interactions ("catalogue": every item); see docs/paper_differences.md
    negatives_from: str = "trained"
    # Share of the pairs whose query or positive (one side, at random) is replaced by its cold twin:
    # the item as the cold-start path sees a new one (no id vector, degree unknown, the neighbourhood
    # of 0-3 revealed interactions: ``cold_twins``). DropoutNet's idea (Volkovs et al., NeurIPS 2017)
    # for a graph network: the state new items are embedded in is trained. 0.25 against 0.1 on the
    # new items' validation pairs: to-new 0.0080 vs 0.0060, the rest level (docs/figures.md); 0: none.
    cold_share: float = 0.25


class MinibatchProducer(torch.utils.data.IterableDataset):
    """Yields ready-to-train minibatches of one epoch; run inside DataLoader workers.

    Every batch has its own RNG seeded by (seed, epoch, batch number), so the stream is the same for
    any number of workers and a resumed run repeats an uninterrupted one exactly.

    Data-parallel training (``rank`` of ``world_size`` processes) splits every minibatch, not the
    epoch: each process draws the whole batch (same queries, shared and hard negatives) and keeps its
    share of the queries, so the averaged gradient is the single-process one and the learning-rate
    schedule does not depend on the number of processes. ``batch_size`` is the global batch.
    """

    def __init__(self, pairs: np.ndarray, features: np.ndarray, neighbors: Neighbors,
                 visits: VisitTable | None, config: SamplerConfig, epoch: int, seed: int,
                 candidate_items: np.ndarray, n_layers: int, rank: int = 0, world_size: int = 1,
                 full: np.ndarray | None = None, cold: ColdTwins | None = None):
        super().__init__()
        if config.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {config.batch_size}")
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
        self.n_layers = n_layers  # K of the model: the computation graph has K hops
        # None: sampled graphs; else the reachable items (:func:`reachable_items`), computed below the
        # output layer at every step (computation_graph(full=...))
        self.full = full
        self.n_batches = -(-len(pairs) // config.batch_size)
        self.n_items = len(features)
        self.cold = cold if config.cold_share > 0 else None
        if self.cold is not None:  # rows N..2N-1 of the graph: the cold twins, with their neighbourhoods
            c = self.cold.neighbors
            self.neighbors = Neighbors(np.concatenate([neighbors.items, c.items]),
                                       np.concatenate([neighbors.weights, c.weights]),
                                       np.concatenate([neighbors.mask, c.mask]))
        self.band = hard_negative_band(len(features), None if visits is None else visits.items.shape[1])

    def __len__(self) -> int:
        return self.n_batches

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

    def make_batch(self, b: int) -> Minibatch:
        rng = np.random.default_rng([self.seed, self.epoch, b])
        chunk = self.pairs[b * self.config.batch_size:(b + 1) * self.config.batch_size]
        queries, positives = chunk[:, 0], chunk[:, 1]
        negatives = rng.choice(self.candidates, size=self.config.n_shared_negatives)
        hard = (self._hard_negatives(queries, rng) if self.n_hard() > 0
                else np.zeros((len(queries), 0), dtype=np.int64))
        n_batch = len(queries)
        positives_in, negatives_in = positives, negatives
        if self.cold is not None:  # drawn last, so a run without twins draws the same stream as before
            cold = rng.random(n_batch) < self.config.cold_share
            side = rng.random(n_batch) < 0.5  # True: the query is the cold one
            queries = np.where(cold & side, queries + self.n_items, queries)
            positives_in = np.where(cold & ~side, positives + self.n_items, positives)
            # twins among the shared negatives at the positives' rate (cold_share / 2): new items
            # compete with each other in every list, so unrelated twins are pushed apart too, and the
            # cold offset learns a calibration, not the twins' share
            negatives_in = np.where(rng.random(len(negatives)) < self.config.cold_share / 2,
                                    negatives + self.n_items, negatives)
        if self.world_size > 1:  # this process's share of the global batch (drawn whole above)
            share = np.array_split(np.arange(n_batch), self.world_size)[self.rank]
            queries, positives, hard = queries[share], positives[share], hard[share]
            positives_in = positives_in[share]
        wanted = np.concatenate([queries, positives_in, negatives_in, hard.reshape(-1)])
        targets, inverse = np.unique(wanted, return_inverse=True)
        input_nodes, blocks = computation_graph(targets, self.neighbors, self.n_layers, self.full)
        x, item_index = self.features[input_nodes % self.n_items], input_nodes
        if self.cold is not None:
            twin = input_nodes >= self.n_items
            if self.cold.degree_column is not None:
                x[twin, self.cold.degree_column] = self.cold.unknown_degree  # x is a copy (fancy index)
            item_index = np.where(twin, -1, input_nodes)
        nq, nn_ = len(queries), len(negatives)
        return Minibatch(
            x=torch.from_numpy(x),
            item_index=torch.from_numpy(item_index),
            blocks=[TensorBlock(blk.n_dst, torch.from_numpy(blk.neighbors), torch.from_numpy(blk.weights),
                                torch.from_numpy(blk.mask)) for blk in blocks],
            query=torch.from_numpy(inverse[:nq]),
            positive=torch.from_numpy(inverse[nq:2 * nq]),
            negative=torch.from_numpy(inverse[2 * nq:2 * nq + nn_]),
            hard=torch.from_numpy(inverse[2 * nq + nn_:].reshape(nq, hard.shape[1])),  # (B * H,) -> (B, H)
            positive_item=torch.from_numpy(positives), negative_item=torch.from_numpy(negatives),
            hard_item=torch.from_numpy(hard), share=len(queries) / n_batch,
            positive_cold=torch.from_numpy(positives_in >= self.n_items),
            negative_cold=torch.from_numpy(negatives_in >= self.n_items))

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for b in range(worker, self.n_batches, n_workers):
            yield self.make_batch(b)


def collate_identity(batch):
    """Batches are built whole by the producer; DataLoader must not re-batch them."""
    return batch


def hard_negative_depth(n_items: int, walks: WalkConfig, sampler: SamplerConfig) -> int:
    """How deep the visit table must go for the hard negatives (0 without them)."""
    reach = walks.walks_per_item * walks.max_walk_length  # most distinct items one source can visit
    return hard_negative_band(n_items, reach)[1] if sampler.hard_negatives else 0


def negative_candidates(degree: np.ndarray, sampler: SamplerConfig) -> np.ndarray:
    """The items negatives are drawn from (uniformly).

    ``negatives_from="trained"`` leaves items without training interactions out, so their zero-initialised
    id vectors are never pushed away as negatives and their embeddings stay feature-driven (cold start).
    """
    if sampler.negatives_from not in ("catalogue", "trained"):
        raise ValueError(f"negatives_from must be 'catalogue' or 'trained', got {sampler.negatives_from!r}")
    candidates = np.arange(len(degree)) if sampler.negatives_from == "catalogue" else np.flatnonzero(degree > 0)
    return candidates if len(candidates) else np.arange(len(degree))
