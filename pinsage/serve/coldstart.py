"""Cold start: embed items added after training, without retraining.

PinSage is inductive: an item's embedding is a function of its features and of its neighbours'
features, so an item the model never saw gets an embedding from the trained weights alone. Given a
trained run directory and a dataset that holds the run's items plus new ones (with their features,
and a few interactions or none), :func:`embed_new_items`:

1. featurises the new items with the run's *fitted* transforms: the word vectors the run trained
   (``features/word_vectors.bin``; refitting word2vec would move every vector) or the run's
   pretrained vectors file, the same VGG16 weights. Standardisation lives in the model (its feature
   mean/std buffers), so nothing else is refitted. A new item's degree is *unknown* to the network
   (its log-degree input and its popularity prior read the catalogue mean): what its cold twins were
   trained with (``SamplerConfig.cold_share``);
2. gives each new item a neighbourhood of trained items: first the existing items engaged beside
   it in the contexts that hold it (within ``positive_window`` steps, the way the loss defines
   positives; :func:`beside_new_items`), then its content neighbours (:mod:`pinsage.graph.content`),
   weighted by rank with the walk neighbourhoods' profile. Walks from a new item over a handful of
   interactions wander through those contexts' whole histories: measured, they lose to this on the
   new items' validation pairs (docs/figures.md). Only the new items' interactions join the graph
   (:func:`extended_graph`);
3. runs the MapReduce export (:func:`pinsage.export.embed.export_embeddings`) over the extended catalogue
   with the trained network, its id-embedding table extended with zero rows (the cold twins' state:
   no id vector), and gives the new items the network's learned cold offset (``PinSage.cold_bias``)
   in their ``prior``;
4. writes the extended catalogue as a run directory of its own: ``prepare/items.parquet``,
   ``features/``, ``neighbors/``, ``embeddings/``, ``index/`` and ``coldstart.json``, so
   ``python -m pinsage recommend --run OUT`` answers with the new items in the index.

The trained run is never modified (it stays what was evaluated and registered). The existing items
keep their neighbour lists, hence exactly their embeddings (``coldstart.json`` records the largest
difference to the run's own export as a check). New interactions between existing items are not
used: that is what the next retrain is for.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pinsage.data.adapters import resolve_dataset_dir
from pinsage.data.dataset import load_dataset
from pinsage.export.embed import export_embeddings, item_prior
from pinsage.export.embeddings import read_embeddings, write_embeddings
from pinsage.export.index import build_index, save_index
from pinsage.features.build import build_features, content_blocks, degree_column, feature_matrix, save_features
from pinsage.features.words import load_word_vectors
from pinsage.graph.bipartite import build_graph
from pinsage.graph.content import beside_first, content_neighbors, content_vectors, engaged_beside, rank_profile
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import PinSage, load_model
from pinsage.run.config import PipelineConfig
from pinsage.run.layout import RunDir
from pinsage.util.io import write_json, write_table


def _word_vectors(run: RunDir, cfg):

    saved = run.word_vectors
    if saved.exists():
        return load_word_vectors(saved)
    if cfg.features.word2vec_vectors:
        return load_word_vectors(cfg.features.word2vec_vectors)
    raise FileNotFoundError(f"{saved} is missing: the run predates saved word vectors; re-run its features "
                            "stage (the word2vec fit must be the one the model was trained on)")


def extend_model(model, n_items: int):
    """A copy of ``model`` whose id-embedding table has ``n_items`` rows, the new ones zero."""


    config = dataclasses.replace(model.config, n_items=n_items)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if "id_embedding.weight" in state:
        old = state["id_embedding.weight"]
        state["id_embedding.weight"] = torch.cat([old, old.new_zeros(n_items - len(old), old.shape[1])])
    extended = PinSage(config)
    extended.load_state_dict(state)
    return extended.eval()


def _align_columns(new: pa.Table, like: pa.Table) -> pa.Table:
    """``new`` with exactly ``like``'s columns: a visual block the new items lack is zero, has_image 0."""
    cols = []
    for field in like.schema:
        if field.name in new.column_names:
            cols.append(new.column(field.name).cast(field.type))
        elif pa.types.is_fixed_size_list(field.type):
            zeros = np.zeros(new.num_rows * field.type.list_size, dtype=np.float32)
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(zeros), field.type.list_size))
        else:
            cols.append(pa.array(np.zeros(new.num_rows), field.type))
    return pa.table(cols, schema=like.schema)


def extended_graph(run: RunDir, interactions: pd.DataFrame, ext_index: pd.Index, new_ids: set):
    """The run's training edges plus the interactions of the new items, nothing else.

    Interactions between existing items that the run did not train on (its held-out pairs, or what
    happened since) wait for the next retrain: joining them here would move existing items'
    neighbourhoods without retraining and, in the ``new-items`` experiment, hand every method the
    held-out future. -> (graph over ``ext_index``, number of contexts the new items touch)
    """

    train = RunDir(run).interactions(["context_id", "context", "item", "weight"])
    extra = interactions[interactions["item_id"].isin(new_ids)]
    ctx_of = dict(zip(train["context_id"], train["context"]))
    n_ctx = int(train["context"].max()) + 1 if len(train) else 0
    unseen = [c for c in pd.unique(extra["context_id"]) if c not in ctx_of]
    ctx_of.update({c: n_ctx + i for i, c in enumerate(unseen)})
    edges = pd.concat([
        train[["context", "item", "weight"]],
        pd.DataFrame({"context": extra["context_id"].map(ctx_of).to_numpy(dtype=np.int64),
                      "item": ext_index.get_indexer(extra["item_id"]).astype(np.int64),
                      "weight": extra["weight"].to_numpy(dtype=np.float64)}),
    ], ignore_index=True)
    edges = edges[edges["item"] >= 0].drop_duplicates(["context", "item"], keep="first")
    g = build_graph(edges["item"].to_numpy(), edges["context"].to_numpy(), len(ext_index), n_ctx + len(unseen),
                    weights=edges["weight"].to_numpy())
    return g, int(extra["context_id"].nunique())


def beside_new_items(run: RunDir, interactions: pd.DataFrame, ext_index: pd.Index, new_ids: set, window: int,
                     ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    """(new item rows, existing item rows): the existing items engaged beside each interaction of a
    new item (:func:`pinsage.graph.content.engaged_beside`) in the training sequence of its context,
    the new interaction placed by its timestamp (``ordered``), else anywhere in the context."""

    extra = interactions[interactions["item_id"].isin(new_ids)]
    cols = ["context_id", "item"] + (["timestamp"] if ordered else [])
    train = RunDir(run).interactions(cols)
    train = train[train["context_id"].isin(set(extra["context_id"]))]
    rows = pd.concat([train.assign(new=False),
                      pd.DataFrame({"context_id": extra["context_id"].to_numpy(),
                                    "item": ext_index.get_indexer(extra["item_id"]).astype(np.int64),
                                    **({"timestamp": extra["timestamp"].to_numpy()} if ordered else {}),
                                    "new": True})], ignore_index=True)
    rows = rows.sort_values(["context_id", "timestamp", "new"] if ordered else ["context_id", "new"],
                            kind="stable").reset_index(drop=True)
    is_new = rows["new"].to_numpy(dtype=bool)
    codes = pd.factorize(rows["context_id"])[0]
    return engaged_beside(codes, rows["item"].to_numpy(dtype=np.int64), is_new, window, ordered, partner_ok=~is_new)


def embed_new_items(run_dir: str | Path, data: str | Path, out: str | Path, log=print) -> dict:
    """Embed the items of ``data`` that ``run_dir`` has not seen; write the extended catalogue to ``out``.

    Returns a summary (also ``out/coldstart.json``). Raises ValueError when ``data`` has no new item.
    """

    t0 = time.perf_counter()
    run, out = RunDir(run_dir), RunDir(out)
    if out.root.resolve() == run.root.resolve():
        raise ValueError(f"--out must differ from the run directory {run.root}: the trained run stays as evaluated")
    cfg = PipelineConfig.from_dict(run.config_dict())
    old_items = pq.read_table(run.items).to_pandas()
    old_ids = old_items["item_id"].astype(str)
    root = resolve_dataset_dir(data, out.dataset)
    ds = load_dataset(root)
    new_items = ds.items[~ds.items["item_id"].isin(set(old_ids))].reset_index(drop=True)
    if new_items.empty:
        raise ValueError(f"{data}: no new item; every item is already in the catalogue of {run.root}")
    new_ids = set(new_items["item_id"])
    ext_items = pd.concat([old_items, new_items[[c for c in old_items.columns if c in new_items.columns]]],
                          ignore_index=True)
    ext_index = pd.Index(ext_items["item_id"].astype(str))
    n_old, n_new = len(old_items), len(new_items)
    new_rows = np.arange(n_old, n_old + n_new, dtype=np.int64)
    model_dir = run.model_dir()
    model = extend_model(load_model(model_dir), len(ext_index))

    # 1. the graph extended with the new items' interactions (their degree, for the record and the
    # next refresh's graph) and the existing items engaged beside them
    g, n_touched = extended_graph(run, ds.interactions, ext_index, new_ids)
    degree = g.item_degree()
    sources, partners = beside_new_items(run, ds.interactions, ext_index, new_ids, cfg.train.sampler.positive_window,
                                         bool(ds.has_timestamps) and bool(run.summary()["has_timestamps"]))
    engaged = len(np.unique(sources))
    log(f"coldstart: {n_new} new items ({int((degree[new_rows] > 0).sum())} with interactions in {n_touched} "
        f"contexts, {engaged} with existing items engaged beside them), {n_old} existing")

    # 2. features of the new items with the run's fitted transforms; their degree is unknown to the
    # network (what its cold twins were trained with): the catalogue mean, which standardises to 0
    new_table, _ = build_features(new_items["item_id"].to_numpy(), new_items["title"], new_items["text"],
                                  degree[new_rows], cfg.feature_config(), image_paths=new_items.get("image_path"),
                                  image_root=root, log=log, word_vectors=_word_vectors(run, cfg))
    old_table = pq.read_table(run.features_table)
    col = degree_column(old_table)
    unknown = None if col is None else float(model.feature_mean[col])
    if unknown is not None:
        new_table = new_table.set_column(new_table.column_names.index("log_degree"), "log_degree",
                                         pa.array(np.full(n_new, unknown, dtype=np.float32)))
    table = pa.concat_tables([old_table, _align_columns(new_table, old_table)])
    # 3. their neighbourhoods: the existing items engaged beside them, then their content neighbours
    old_nbrs = Neighbors.load(run.neighbors_table)
    trained = np.flatnonzero(old_nbrs.mask.any(axis=1))  # the candidates the cold twins trained with
    profile = rank_profile(old_nbrs)
    content = content_neighbors(content_vectors(content_blocks(table), trained), new_rows, trained, profile,
                                seed=cfg.walks.seed)
    fresh = beside_first(sources, partners, new_rows, content, profile, cfg.walks.seed)
    nbrs = Neighbors(np.concatenate([old_nbrs.items, fresh.items]), np.concatenate([old_nbrs.weights, fresh.weights]),
                     np.concatenate([old_nbrs.mask, fresh.mask]))
    manifest = json.loads(run.features_manifest.read_text())
    manifest["coldstart"] = {"run": str(run.root), "new_items": n_new,
                             "note": "new rows featurised with the run's fitted word vectors, not refitted; "
                                     "their log_degree is unknown to the network: the catalogue mean"}

    # 4. the export path with the trained network
    emb = export_embeddings(model, feature_matrix(table), nbrs, progress=True)
    ids_run, emb_run = read_embeddings(run.embeddings)
    drift = float(np.abs(emb[:n_old] - emb_run).max()) if np.array_equal(ids_run, old_ids.to_numpy()) else None

    # 5. the extended catalogue as a run directory
    write_table(out.items, pa.Table.from_pandas(ext_items, preserve_index=False))
    summary = {"dataset": str(root), "n_items": len(ext_index), "n_new_items": n_new, "source_run": str(run.root),
               "n_train_interactions": int(g.n_edges), "has_timestamps": bool(ds.has_timestamps)}
    write_json(out.summary_file, summary)
    save_features(out.features, table, manifest)
    nbrs.save(out.neighbors_table, ext_index.to_numpy())
    prior = item_prior(model, degree)
    if unknown is not None:  # a new item's popularity is unknown too: the prior of the mean log degree
        prior[new_rows] = item_prior(model, np.full(n_new, np.expm1(unknown)))
    if model.cold_bias is not None:  # and its score the cold offset its twins were trained with
        prior[new_rows] += np.float32(float(model.cold_bias))
    write_embeddings(out.embeddings, ext_index.to_numpy(), emb, prior)
    index = build_index(emb, cfg.index, prior)
    save_index(out.index, index, ext_index.to_numpy(), emb)  # the answer table too: new items enter old lists
    result = {"run": str(run.root), "data": str(root), "out": str(out.root), "n_old": n_old, "n_new": n_new,
              "new_with_interactions": int((degree[new_rows] > 0).sum()), "new_with_engaged_neighbours": engaged,
              "new_item_ids": list(new_items["item_id"]), "model_dir": str(model_dir),
              "max_abs_change_existing": drift, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out.coldstart, result)
    log(f"coldstart: index of {index.ntotal} items in {out.index} ({result['seconds']}s); existing items' "
        f"embeddings changed by at most {drift if drift is None else f'{drift:.2e}'}")
    return result
