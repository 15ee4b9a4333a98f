"""MapReduce-style embedding export (paper Section 3.4).

Per-item inference through the training path recomputes a neighbour's lower-layer vector once for
every item that has it in its neighbourhood: with T=50 and K=2 that is ~T^K repeated work. The
export instead runs layer by layer over the whole catalogue:

    map:     every item's layer-(k-1) vector -> its message ReLU(Q_k h + q_k), computed once
    join:    each item's neighbour list is joined with those messages
    reduce:  importance-weighted pooling, then W_k on [h ; n], then normalisation

and finally the dense layers G1, G2. Each phase streams over fixed-size chunks of items, so the same
plan runs chunk by chunk on one machine or shard by shard on a cluster.
"""

from __future__ import annotations

import numpy as np
import torch

from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import PinSage
from pinsage.model.sampler import TensorBlock, computation_graph
from pinsage.util.progress import Progress


def _map_chunks(fn, array: np.ndarray, chunk: int, extra: np.ndarray | None = None,
                bar: Progress | None = None, device: torch.device = torch.device("cpu")) -> np.ndarray:
    out = []
    for s in range(0, len(array), chunk):
        args = (torch.from_numpy(array[s:s + chunk]).to(device),)
        if extra is not None:
            args += (torch.from_numpy(extra[s:s + chunk]).to(device),)
        out.append(fn(*args).cpu().numpy())
        if bar is not None:
            bar.update()
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def export_embeddings(model: PinSage, features: np.ndarray, neighbors: Neighbors,
                      chunk_size: int = 16384, progress: bool = False) -> np.ndarray:
    """Embed every catalogue item. (N, F) features -> (N, output_dim) float32 unit vectors.

    ``progress`` shows the chunks done (input, each layer's map and reduce, output) on stderr. Off by
    default: training's validation pass exports every epoch and would interleave with the epoch's bar.
    """
    # On the model's own device (a GPU during training's validation pass): moving it would pull the
    # weights out from under the optimizer and DDP.
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(features)
    n_chunks = -(-n // chunk_size)
    bar = Progress("export", n_chunks * (2 + 2 * len(model.convs)), "chunks", enabled=None if progress else False)
    index = np.arange(n, dtype=np.int64)
    h0 = _map_chunks(model.embed_input, np.ascontiguousarray(features, dtype=np.float32),
                     chunk_size, index, bar, device)  # (N, hidden)
    h = h0
    nbr = torch.from_numpy(neighbors.items.astype(np.int64))  # (N, T)
    w = torch.from_numpy(neighbors.weights.astype(np.float32))
    mask = torch.from_numpy(neighbors.mask)
    for conv in model.convs:
        messages = torch.from_numpy(_map_chunks(conv.message, h, chunk_size, bar=bar, device=device))  # (N, M)
        messages = messages.to(device)
        h_t = torch.from_numpy(h)
        out = []
        for s in range(0, n, chunk_size):  # join + reduce, chunk by chunk of destination items
            e = min(n, s + chunk_size)
            pooled = conv.pool(messages, nbr[s:e].to(device), w[s:e].to(device), mask[s:e].to(device))  # (chunk, M)
            out.append(conv.combine(h_t[s:e].to(device), pooled).cpu().numpy())
            bar.update()
        h = np.concatenate(out)
    emb = _map_chunks(model.finalize, h, chunk_size, h0, bar, device).astype(np.float32)
    bar.close()
    model.train(was_training)
    return emb


@torch.no_grad()
def per_item_embeddings(model: PinSage, features: np.ndarray, neighbors: Neighbors,
                        items: np.ndarray, batch_size: int = 1) -> np.ndarray:
    """Embed ``items`` through the training path (sampled K-hop computation graphs).

    This is the naive inference the export replaces; used to check the export and to measure its
    speed-up. Returns (len(items), output_dim).
    """
    model = model.to("cpu").eval()
    out = []
    for s in range(0, len(items), batch_size):
        targets, inverse = np.unique(items[s:s + batch_size], return_inverse=True)
        input_nodes, blocks = computation_graph(targets, neighbors, model.config.n_layers)
        tblocks = [TensorBlock(b.n_dst, torch.from_numpy(b.neighbors), torch.from_numpy(b.weights),
                               torch.from_numpy(b.mask)) for b in blocks]
        z = model(torch.from_numpy(features[input_nodes]), torch.from_numpy(input_nodes), tblocks)
        out.append(z.numpy()[inverse])
    return np.concatenate(out)


def item_prior(model: PinSage, degree: np.ndarray) -> np.ndarray:
    """(N,) training interactions per item -> (N,) float32 popularity priors in score units,
    w log(1 + d) with the model's ``prior_weight`` w (zeros without one): the ``prior`` column of the
    exported embeddings."""
    w = 0.0 if model.prior_weight is None else float(model.prior_weight)
    return (w * np.log1p(np.asarray(degree, dtype=np.float64))).astype(np.float32)
