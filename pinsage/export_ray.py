"""The MapReduce export (paper Sec. 3.4) on Ray Data: same result as :mod:`pinsage.export`, to rounding.

Per convolution k, over datasets keyed by item index:

    map:     h (item, h, h0)        -> messages (src, m = ReLU(Q_k h + q_k))      every item once
    join:    edges (dst, src, alpha) JOIN messages ON src                        hash shuffle
    reduce:  GROUP BY dst: n = sum alpha * m                                      hash shuffle
    map:     h JOIN n ON item -> h' = combine_k(h, n)

then G1, G2 (and the item's own input where the model uses it) as a final map. ``alpha`` is the
model's pooling weight (importance or mean), computed once per edge. Every item carries a zero-weight
self edge, so an item without neighbours still meets the reduce (n = 0, as in the local export) and
all joins stay inner joins.

The model's weights go to Ray's object store once; each worker process rebuilds the model from them
the first time it needs it. Nothing here needs more than one partition of the graph in memory, so
the same plan scales with the cluster; the final embeddings are gathered on the driver, which writes
the same ``part-*.parquet`` layout as the local export.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from .model import ModelConfig, PinSage
from .walks import Neighbors

_MODELS: dict[str, PinSage] = {}  # per worker process: model rebuilt once per export


def _resolve(value):
    """fn_kwargs reach Ray Data's workers as they are: fetch object references there (zero-copy)."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def _model(payload) -> PinSage:
    payload = _resolve(payload)
    key = payload["key"]
    if key not in _MODELS:
        _MODELS.clear()
        model = PinSage(ModelConfig.from_json(payload["config"]))
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in payload["state"].items()})
        _MODELS[key] = model.eval()
    return _MODELS[key]


def _edges(model: PinSage, neighbors: Neighbors) -> pa.Table:
    """(dst, src, alpha) for every real neighbour, plus a zero-weight self edge per item."""
    n, t = neighbors.items.shape
    alpha = model.convs[0].pool_weights(torch.from_numpy(neighbors.weights.astype(np.float32)),
                                        torch.from_numpy(neighbors.mask)).numpy()  # (N, T)
    mask = neighbors.mask
    dst = np.concatenate([np.repeat(np.arange(n), t)[mask.ravel()], np.arange(n)])
    src = np.concatenate([neighbors.items.astype(np.int64)[mask], np.arange(n)])
    w = np.concatenate([alpha[mask], np.zeros(n, dtype=np.float32)])
    return pa.table({"dst": dst.astype(np.int64), "src": src.astype(np.int64), "alpha": w.astype(np.float32)})


def export_embeddings_ray(model: PinSage, features: np.ndarray, neighbors: Neighbors,
                          num_partitions: int | None = None) -> np.ndarray:
    """Embed every catalogue item on the Ray cluster the caller is connected to.

    (N, F) features -> (N, output_dim) float32 unit vectors, rows in catalogue order.
    ``num_partitions``: hash partitions of each shuffle; default 2 per cluster CPU.
    """
    import ray
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    model = model.to("cpu").eval()
    n = len(features)
    parts = num_partitions or max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    payload_ref = ray.put({"key": f"{id(model)}-{n}", "config": model.config.to_json(), "state": state})
    features_ref = ray.put(np.ascontiguousarray(features, dtype=np.float32))

    def embed_input(batch, payload, feats):
        item = batch["id"].astype(np.int64)
        rows = np.ascontiguousarray(_resolve(feats)[item])  # (B, F), a copy of this batch only
        with torch.no_grad():
            h0 = _model(payload).embed_input(torch.from_numpy(rows), torch.from_numpy(item)).numpy()
        return {"item": item, "h": h0, "h0": h0}

    h = ray.data.range(n, override_num_blocks=parts).map_batches(embed_input, batch_format="numpy",
                                      fn_kwargs={"payload": payload_ref, "feats": features_ref}).materialize()
    edges = ray.data.from_arrow(_edges(model, neighbors)) if model.convs else None
    for k in range(len(model.convs)):
        def message(batch, payload, k=k):
            with torch.no_grad():
                m = _model(payload).convs[k].message(torch.from_numpy(batch["h"])).numpy()
            return {"src": batch["item"], "m": m}

        def pool(group):
            return {"item": group["dst"][:1],
                    "pooled": (group["alpha"][:, None] * group["m"]).sum(axis=0, keepdims=True)}

        def combine(batch, payload, k=k):
            with torch.no_grad():
                z = _model(payload).convs[k].combine(torch.from_numpy(batch["h"]),
                                                      torch.from_numpy(batch["pooled"])).numpy()
            return {"item": batch["item"], "h": z, "h0": batch["h0"]}

        messages = h.map_batches(message, batch_format="numpy", fn_kwargs={"payload": payload_ref})
        joined = edges.join(messages, join_type="inner", num_partitions=parts, on=("src",))
        pooled = joined.groupby("dst", num_partitions=parts).map_groups(pool, batch_format="numpy")
        h = (h.join(pooled, join_type="inner", num_partitions=parts, on=("item",))
             .map_batches(combine, batch_format="numpy", fn_kwargs={"payload": payload_ref}).materialize())

    def finalize(batch, payload):
        with torch.no_grad():
            z = _model(payload).finalize(torch.from_numpy(batch["h"]), torch.from_numpy(batch["h0"])).numpy()
        return {"item": batch["item"], "z": z}

    out = h.map_batches(finalize, batch_format="numpy", fn_kwargs={"payload": payload_ref})
    result = np.zeros((n, model.config.output_dim), dtype=np.float32)
    seen = np.zeros(n, dtype=bool)
    for batch in out.iter_batches(batch_format="numpy", batch_size=65536):
        result[batch["item"]] = batch["z"]
        seen[batch["item"]] = True
    if not seen.all():
        raise RuntimeError(f"ray export lost {int((~seen).sum())} of {n} items")
    return result
