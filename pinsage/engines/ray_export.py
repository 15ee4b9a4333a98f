"""The MapReduce export (paper Sec. 3.4) on Ray: same result as :mod:`pinsage.export.embed`, to rounding.

Items are cut into P contiguous shards; each shard's representations stay in Ray's object store
between steps (nothing is gathered on the driver until the final vectors). Per convolution k:

    map (one task per source shard i):
        m = ReLU(Q_k h_i + q_k)                           every item's message, computed once
        for every neighbour edge (dst, src in shard i):  alpha_{dst,src} * m_src
        combine on the map side: sum per dst              -> one partial per destination shard j
    shuffle: partial (i, j) goes from map task i to reduce task j (Ray's object store moves it)
    reduce (one task per destination shard j):
        n_dst = sum over i of partial (i, j)[dst]         importance pooling, complete
        h'_j = combine_k(h_j, n_j)                        W_k, the paper's concat + normalise

then G1, G2 (and the item's own input where the model uses it) per shard. ``alpha`` is the model's
pooling weight (importance or mean). An item without neighbours receives no partial and keeps n = 0,
as in the local export. Map-side combining bounds the shuffle by P x N rows of M floats instead of
the N x T neighbour rows a plain join would move; with more shards than neighbours per item, it is
the plain join.

This is Ray's task and object-store machinery, not a scheduler of ours. Ray Data's hash-shuffle join
followed by ``groupby().map_groups`` gave the same vectors but ran ~100x slower than the local export
at 10^6 edges (302 s against 3.6 s, one Python call per group), so the shuffle is written out here.
"""

from __future__ import annotations

import numpy as np
import ray
import torch

from pinsage.engines.ray_session import shard_bounds
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import ModelConfig, PinSage

_MODELS: dict[str, PinSage] = {}  # per worker process: model rebuilt once per export


def _model(payload: dict) -> PinSage:
    key = payload["key"]
    if key not in _MODELS:
        _MODELS.clear()
        model = PinSage(ModelConfig.from_json(payload["config"]))
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in payload["state"].items()})
        _MODELS[key] = model.eval()
    return _MODELS[key]


def _embed_input(payload: dict, features: np.ndarray, start: int, stop: int) -> np.ndarray:
    """h^0 of items [start, stop).  -> (n_i, hidden)"""
    rows = torch.from_numpy(np.ascontiguousarray(features[start:stop]))  # (n_i, F), this shard only
    with torch.no_grad():
        return _model(payload).embed_input(rows, torch.arange(start, stop)).numpy()


def _map_messages(payload: dict, k: int, h: np.ndarray, edges: dict, dst_bounds: np.ndarray):
    """Messages of one source shard, weighted per edge and summed per destination, split by shard.

    ``edges``: this shard's neighbour edges sorted by dst: ``dst`` (E_i,) global, ``src`` (E_i,)
    local to the shard, ``alpha`` (E_i,). Returns one ``(dst ids, (U_j, M) sums)`` per destination shard.
    """
    dst = edges["dst"]
    starts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]]) if len(dst) else np.zeros(0, dtype=np.int64)
    layer = _model(payload).convs[k]
    with torch.no_grad():
        m = layer.message(torch.from_numpy(h))  # (n_i, M)
    if len(dst) == 0:  # no neighbour edge starts in this shard
        sums = np.zeros((0, m.shape[1]), dtype=np.float32)
    else:
        # fused gather + weighted sum per dst segment, as the local export's pooling: the (E_i, M)
        # weighted messages are never materialised
        with torch.no_grad():
            sums = torch.nn.functional.embedding_bag(
                torch.from_numpy(edges["src"]), m, offsets=torch.from_numpy(starts),
                per_sample_weights=torch.from_numpy(edges["alpha"]), mode="sum").numpy()  # (U, M)
    ids = dst[starts]  # (U,) sorted, distinct
    out = []
    cut = np.searchsorted(ids, dst_bounds)  # ids are sorted: shard j is ids[cut[j]:cut[j + 1]]
    for j in range(len(dst_bounds) - 1):
        out.append((ids[cut[j]:cut[j + 1]], sums[cut[j]:cut[j + 1]]))
    return tuple(out) if len(out) > 1 else out[0]


def _reduce_combine(payload: dict, k: int, h: np.ndarray, start: int, *partials) -> np.ndarray:
    """Pool one destination shard from every map task's partial, then the layer's combine."""
    layer = _model(payload).convs[k]
    pooled = np.zeros((len(h), layer.message_dim), dtype=np.float32)  # (n_j, M); 0 without neighbours
    for ids, sums in partials:
        pooled[ids - start] += sums  # ids are distinct within one partial
    with torch.no_grad():
        return layer.combine(torch.from_numpy(h), torch.from_numpy(pooled)).numpy()  # (n_j, hidden)


def _finalize(payload: dict, h: np.ndarray, h0: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _model(payload).finalize(torch.from_numpy(h), torch.from_numpy(h0)).numpy()


def _shard_edges(model: PinSage, neighbors: Neighbors, bounds: list[tuple[int, int]]) -> list[dict]:
    """Every real neighbour edge (dst, src, alpha), grouped by the source's shard and sorted by dst."""
    n, t = neighbors.items.shape
    alpha = model.convs[0].pool_weights(torch.from_numpy(neighbors.weights.astype(np.float32)),
                                        torch.from_numpy(neighbors.mask)).numpy()  # (N, T)
    mask = neighbors.mask
    dst = np.repeat(np.arange(n, dtype=np.int64), t)[mask.ravel()]  # (E,) already sorted by dst
    src = neighbors.items.astype(np.int64)[mask]
    w = alpha[mask].astype(np.float32)
    starts = np.array([a for a, _ in bounds] + [n], dtype=np.int64)
    shard = np.searchsorted(starts, src, side="right") - 1
    order = np.argsort(shard, kind="stable")  # stable: dst stays sorted inside each shard
    cut = np.searchsorted(shard[order], np.arange(len(bounds) + 1))
    out = []
    for i, (a, _) in enumerate(bounds):
        sel = order[cut[i]:cut[i + 1]]
        out.append({"dst": dst[sel], "src": src[sel] - a, "alpha": w[sel]})
    return out


def export_embeddings_ray(model: PinSage, features: np.ndarray, neighbors: Neighbors,
                          num_partitions: int | None = None) -> np.ndarray:
    """Embed every catalogue item on the Ray cluster the caller is connected to.

    (N, F) features -> (N, output_dim) float32 unit vectors, rows in catalogue order.
    ``num_partitions``: item shards (map and reduce tasks per layer); default 2 per cluster CPU.
    """

    model = model.to("cpu").eval()
    n = len(features)
    parts = num_partitions or max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    bounds = shard_bounds(n, parts)
    p = len(bounds)
    dst_bounds = np.array([a for a, _ in bounds] + [n], dtype=np.int64)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    payload = ray.put({"key": f"{id(model)}-{n}", "config": model.config.to_json(), "state": state})
    feats = ray.put(np.ascontiguousarray(features, dtype=np.float32))  # read zero-copy by every task

    embed = ray.remote(_embed_input)
    h0 = [embed.remote(payload, feats, a, b) for a, b in bounds]  # refs: (n_i, hidden) per shard
    h = h0
    if model.convs:
        edge_refs = [ray.put(e) for e in _shard_edges(model, neighbors, bounds)]
        map_task = ray.remote(_map_messages).options(num_returns=p)
        reduce_task = ray.remote(_reduce_combine)
        for k in range(len(model.convs)):
            partials = [map_task.remote(payload, k, h[i], edge_refs[i], dst_bounds) for i in range(p)]
            if p == 1:
                partials = [[r] for r in partials]
            h = [reduce_task.remote(payload, k, h[j], bounds[j][0], *[partials[i][j] for i in range(p)])
                 for j in range(p)]
    final = ray.remote(_finalize)
    z = ray.get([final.remote(payload, h[j], h0[j]) for j in range(p)])
    return np.concatenate(z).astype(np.float32, copy=False) if z else np.zeros((0, model.config.output_dim),
                                                                             dtype=np.float32)
