"""The whole chain as stage functions over one run directory (layout: :mod:`pinsage.run.layout`).

Each stage reads what earlier stages wrote under ``cfg.out``, writes its own outputs atomically and
returns the paths it wrote. ``tasks/`` wraps these for Airflow and MLflow; ``run_all`` chains them
in-process for ``python -m pinsage run``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pinsage.data.adapters import resolve_dataset_dir
from pinsage.data.dataset import DatasetError, load_dataset
from pinsage.data.split import split_interactions
from pinsage.data.tags import allowed_tags, append_tags
from pinsage.engines import export_on_engine, walk_engine
from pinsage.eval import baselines, tuning
from pinsage.eval.metrics import embedding_scorer, evaluate_scorer, markdown_table, metrics_from_ranks
from pinsage.export.answers import table_k
from pinsage.export.embed import item_prior
from pinsage.export.embeddings import read_embeddings, read_prior, write_embeddings
from pinsage.export.index import build_index, save_index
from pinsage.features.build import build_features, feature_blocks, feature_matrix, save_features
from pinsage.graph.bipartite import BipartiteGraph, build_graph
from pinsage.graph.neighbors import Neighbors, VisitTable
from pinsage.model import distributed
from pinsage.model.coldtwins import cold_twins
from pinsage.model.network import build_model, load_model, save_model
from pinsage.model.sampler import hard_negative_depth, negative_candidates, positive_pairs
from pinsage.model.train import TrainData, epoch_pairs, train_model
from pinsage.report import write_report
from pinsage.run.config import PipelineConfig
from pinsage.run.layout import RunDir
from pinsage.run.params import check_catalogue, check_config
from pinsage.util.io import atomic_dir, read_npz, write_json, write_npz, write_table, write_text
from pinsage.util.resources import cpu_threads
from pinsage.validation import choose_prior_weight, validation_mrr

Log = Callable[[str], None]


def _sized(stage: Callable[..., dict]) -> Callable[..., dict]:
    """Run a stage with its thread pools sized to the run's CPU budget (``resources.cpu_threads``)."""
    @functools.wraps(stage)
    def run(cfg: PipelineConfig, *args, **kwargs) -> dict:
        with cpu_threads(cfg.cpus):
            return stage(cfg, *args, **kwargs)
    return run


# ---------------------------------------------------------------------------------------------
# Stage 1: prepare -- validate, split, dense indices

def prepare(cfg: PipelineConfig, log: Log = print) -> dict:
    """Stage 1, and the library's door: the config is checked here, before anything is written
    (parameter values were checked when ``config_from_params`` built it); ``config.json`` is written
    with the prepared data, so a failed prepare leaves the previous pair as it was."""
    check_config(cfg)
    root = resolve_dataset_dir(cfg.data, RunDir(cfg.out).dataset)
    ds = load_dataset(root, max_timestamp=cfg.max_timestamp)
    check_catalogue(cfg, ds.n_items, ds.items_file.name)
    try:
        split = split_interactions(ds.interactions, ds.has_timestamps, seed=cfg.seed, protocol=cfg.protocol)
    except DatasetError as err:  # nothing to evaluate: name the file and the column that decide it
        if err.file is not None:
            raise
        raise DatasetError(f"{err.message}; expected at least one context with 3 distinct items",
                           file=ds.interactions_file.name, column="context_id") from None
    items = ds.items.reset_index(drop=True)
    tags = None
    if ds.tags is not None:  # users' tags join the text: only those the training split could have seen
        tags = allowed_tags(ds.tags, split.heldout)
        items = append_tags(items, tags)
    item_rows = pd.Index(items["item_id"])  # item_id -> dense row
    edges = split.train.sort_values(["context_id", "order"], kind="stable").reset_index(drop=True)
    edges["item"] = item_rows.get_indexer(edges["item_id"]).astype(np.int64)
    edges["context"] = pd.factorize(edges["context_id"], sort=True)[0].astype(np.int64)
    d = RunDir(cfg.out).prepare
    summary = {"dataset": str(root), "has_timestamps": bool(ds.has_timestamps),
               "n_items": int(len(items)), "n_contexts": int(edges["context"].max() + 1) if len(edges) else 0,
               "n_train_interactions": int(len(edges)), "n_valid_pairs": int(len(split.valid)),
               "n_test_pairs": int(len(split.test)), "max_timestamp": cfg.max_timestamp,
               "protocol": cfg.protocol}
    if tags is not None:
        summary.update(n_tags=int(len(ds.tags)), n_tags_in_text=int(len(tags)))
    with atomic_dir(d) as tmp:  # the five files appear together or not at all (a full disk, a kill)
        write_table(tmp / "items.parquet", pa.Table.from_pandas(items, preserve_index=False))
        write_table(tmp / "train.parquet", pa.Table.from_pandas(edges, preserve_index=False))
        for name, pairs in (("valid", split.valid), ("test", split.test)):
            pairs = pairs.reset_index(drop=True).copy()
            pairs["query"] = item_rows.get_indexer(pairs["query_item"]).astype(np.int64)
            pairs["target"] = item_rows.get_indexer(pairs["target_item"]).astype(np.int64)
            write_table(tmp / f"{name}.parquet", pa.Table.from_pandas(pairs, preserve_index=False))
        write_json(tmp / "summary.json", summary)
    write_json(RunDir(cfg.out).config, cfg.to_dict())
    log(f"prepare: {summary['n_items']} items, {summary['n_contexts']} contexts, "
        f"{summary['n_train_interactions']} training interactions, {summary['n_valid_pairs']} validation "
        f"and {summary['n_test_pairs']} test pairs ({cfg.protocol} protocol)")
    return {"prepare_dir": str(d)}


# ---------------------------------------------------------------------------------------------
# Stages 2-4: graph, features, neighbourhoods

def graph(cfg: PipelineConfig, log: Log = print) -> dict:
    run = RunDir(cfg.out)
    s, edges = run.summary(), run.interactions()
    g = build_graph(edges["item"].to_numpy(), edges["context"].to_numpy(), s["n_items"], s["n_contexts"],
                    weights=edges["weight"].to_numpy())
    path = run.graph_file
    g.save(path)
    log(f"graph: {g.n_items} items, {g.n_contexts} contexts, {g.n_edges} edges")
    return {"graph": str(path)}


@_sized
def features(cfg: PipelineConfig, log: Log = print) -> dict:
    t0 = time.perf_counter()
    run = RunDir(cfg.out)
    items = pq.read_table(run.items).to_pandas()
    degree = np.bincount(run.interactions(["item"])["item"].to_numpy(), minlength=len(items))
    table, manifest = build_features(items["item_id"].to_numpy(), items["title"], items["text"], degree,
                                     cfg.feature_config(), image_paths=items.get("image_path"),
                                     image_root=run.summary()["dataset"], log=log,
                                     save_vectors=run.word_vectors)  # for cold start
    path = save_features(run.features, table, manifest)
    log(f"features: {table.num_rows} items x {feature_matrix(table).shape[1]} dims "
        f"({', '.join(manifest['columns'])}) in {time.perf_counter() - t0:.1f}s")
    return {"features": str(path)}


@_sized
def neighbors(cfg: PipelineConfig, log: Log = print) -> dict:
    t0 = time.perf_counter()
    run = RunDir(cfg.out)
    g = BipartiteGraph.load(run.graph_file)
    depth = hard_negative_depth(g.n_items, cfg.walks, cfg.train.sampler)
    with walk_engine(cfg, log) as walk:
        nbrs, visits = walk(g, depth, "neighbors: walks")
    nbrs.save(run.neighbors_table, run.item_ids())
    write_npz(run.visits, items=visits.items, counts=visits.counts)
    log(f"neighbors: top-{cfg.walks.top_t} of {cfg.walks.walks_per_item} walks/item, "
        f"{nbrs.mask.any(axis=1).mean():.1%} items with neighbours, {time.perf_counter() - t0:.1f}s")
    return {"neighbors": str(run.neighbors_table), "visits": str(run.visits)}


def _load_inputs(run: RunDir) -> tuple[np.ndarray, Neighbors]:
    return feature_matrix(pq.read_table(run.features_table)), Neighbors.load(run.neighbors_table)


# ---------------------------------------------------------------------------------------------
# Stages 5-7: train, export, index

@_sized
def train(cfg: PipelineConfig, log: Log = print, on_epoch_end=None,
          group: distributed.ProcessGroup | None = None) -> dict:
    """Stage 5. With ``train.nproc > 1`` this launches data-parallel processes (torchrun) that each
    run this function with their ``group``; process 0 writes the model and the history."""
    run = RunDir(cfg.out)
    if group is None and cfg.train.nproc > 1:
        config_path = run.checkpoint / "ddp_config.json"
        write_json(config_path, cfg.to_dict())
        distributed.launch(config_path, cfg.train.nproc, log=log)
        history = run.read_json(run.history)
        if on_epoch_end is not None:
            for record in history["epochs"]:
                on_epoch_end(record)
        return {"model_dir": str(run.checkpoint), "best_epoch": history["best_epoch"]}
    group = group or distributed.SINGLE_PROCESS
    feats, nbrs = _load_inputs(run)
    v = read_npz(run.visits)
    rows = run.interactions(["context", "item"])
    context, item = rows["context"].to_numpy(), rows["item"].to_numpy()
    ordered = run.summary()["has_timestamps"]
    window = cfg.train.sampler.positive_window

    def pairs_for_epoch(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([cfg.train.seed, epoch, 1])
        pairs = positive_pairs(context, item, window, ordered, rng)
        return pairs[rng.permutation(len(pairs))[:epoch_pairs(len(pairs), len(feats), cfg.train)]]

    degree = BipartiteGraph.load(run.graph_file).item_degree()
    cold = None
    if cfg.train.sampler.cold_share > 0:
        cold = cold_twins(pq.read_table(run.features_table), nbrs, context, item, window, ordered, cfg.walks.seed)
    data = TrainData(pairs_for_epoch, feats, nbrs, VisitTable(v["items"], v["counts"]),
                     negative_candidates(degree, cfg.train.sampler), cold)
    vq, vt = run.pairs("valid")
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of what a seed reproduces
    # the cold offset exists where cold twins train it
    model = build_model(dataclasses.replace(cfg.model, cold_bias=cfg.model.cold_bias and cold is not None), feats)
    model, state = train_model(
        model, data, cfg.train, checkpoint_dir=run.checkpoint,
        evaluate_fn=lambda m: validation_mrr(m, feats, nbrs, vq, vt),
        on_epoch_end=on_epoch_end, log=lambda s: log(f"train: {s}"), group=group)
    if not group.is_main:
        return {"model_dir": str(run.checkpoint), "best_epoch": state.best_epoch}
    prior = choose_prior_weight(model, feats, nbrs, vq, vt, degree, cfg.train.temperature)
    best = prior["validation_mrr"][f"{prior['chosen']:g}"] if prior else state.best_score
    save_model(model, run.checkpoint)
    write_json(run.history, {"best_epoch": state.best_epoch, "best_validation_mrr": best,
                             "stopped": state.stopped, "epochs": state.history, "prior": prior})
    log(f"train: best epoch {state.best_epoch}, validation MRR {best:.4f}" + (
        f" with the popularity prior weight {prior['chosen']:g} chosen on validation (without it "
        f"{prior['validation_mrr']['0']:.4f})" if prior else ""))
    return {"model_dir": str(run.checkpoint), "best_epoch": state.best_epoch}


@_sized
def export(cfg: PipelineConfig, log: Log = print, model_dir: str | None = None) -> dict:
    """Stage 6: embed every item with ``model_dir`` (default: the run's trained network)."""
    t0 = time.perf_counter()
    run = RunDir(cfg.out)
    feats, nbrs = _load_inputs(run)
    model = load_model(model_dir or run.checkpoint)
    emb = export_on_engine(cfg, model, feats, nbrs, log)
    prior = item_prior(model, BipartiteGraph.load(run.graph_file).item_degree())
    parts = write_embeddings(run.embeddings, run.item_ids(), emb, prior)
    log(f"export: {len(emb)} embeddings of {emb.shape[1]} dims in {len(parts)} part(s), "
        f"{time.perf_counter() - t0:.1f}s")
    return {"embeddings_dir": str(run.embeddings)}


@_sized
def index(cfg: PipelineConfig, log: Log = print) -> dict:
    run = RunDir(cfg.out)
    ids, emb = read_embeddings(run.embeddings)
    idx = build_index(emb, cfg.index, read_prior(run.embeddings))
    log(f"index: {type(idx).__name__} over {idx.ntotal} items, and each one's top {table_k(idx.ntotal)} "
        "(the answer table)")
    return {"index_dir": str(save_index(run.index, idx, ids, emb))}


# ---------------------------------------------------------------------------------------------
# Stage 8: evaluate PinSage and the baselines under full ranking

@_sized
def evaluate(cfg: PipelineConfig, log: Log = print) -> dict:
    t0 = time.perf_counter()
    run = RunDir(cfg.out)
    ids, emb = read_embeddings(run.embeddings)
    if not np.array_equal(ids, run.item_ids()):
        raise ValueError("embeddings are not in catalogue order; re-run the export")
    g = BipartiteGraph.load(run.graph_file)
    blocks = feature_blocks(pq.read_table(run.features_table))
    w = cfg.walks
    scorers = {
        "pinsage": embedding_scorer(emb, read_prior(run.embeddings)),
        "popularity": baselines.popularity(g),
        "annotation": baselines.annotation(blocks["annotation"]),
        "combined": baselines.combined(blocks),
        "pixie": baselines.pixie(g, cfg.pixie_walks_per_item, w.restart_prob, w.max_walk_length, cfg.seed),
    }  # itemknn, ease, rp3beta: tuned on validation below (weights and grids)
    if "visual" in blocks:
        scorers["visual"] = baselines.annotation(blocks["visual"])
    t_tune = time.perf_counter()
    tuned = tuning.tuned_baselines(g, *run.pairs("valid"), ease_max_items=baselines.EASE_MAX_ITEMS)
    t_tune = time.perf_counter() - t_tune
    scorers.update(tuned.scorers)
    result, rank_tables = {}, []
    for split_name in ("test", "valid"):
        q, t = run.pairs(split_name)
        ranks = {name: evaluate_scorer(fn, q, t) for name, fn in scorers.items()}
        result[split_name] = (len(q), {name: metrics_from_ranks(r) for name, r in ranks.items()})
        rank_tables.append(pd.DataFrame({"split": split_name, "query": q, "target": t, **ranks}))
    # Per-pair ranks: what paired bootstrap comparisons between methods and runs resample.
    write_table(run.ranks, pa.Table.from_pandas(pd.concat(rank_tables, ignore_index=True), preserve_index=False))
    n_test, test = result["test"]
    n_valid, valid = result["valid"]
    metrics = {"n_pairs": n_test, "methods": test, "validation": {"n_pairs": n_valid, "methods": valid},
               "hyperparameters": tuned.hyperparameters, "selection": tuned.selection, "skipped": tuned.skipped}
    write_json(run.metrics, metrics)
    table = (markdown_table(test, n_test, "Test") + "\n" + markdown_table(valid, n_valid, "Validation"))
    note = tuning.settings_note(tuned)
    if note:
        table += "\nSettings chosen on the validation pairs:\n\n" + note
    write_text(run.metrics_table, table)
    log(f"evaluate: {len(scorers)} methods in {time.perf_counter() - t0:.1f}s "
        f"({', '.join(tuned.selection)} grids on validation: {t_tune:.1f}s)\n\n{table}")
    return {"metrics": str(run.metrics), "metrics_table": str(run.metrics_table), "ranks": str(run.ranks)}


def report(cfg: PipelineConfig, log: Log = print, mlflow_run_url: str | None = None) -> dict:
    """``report.html``: metrics against the baselines, training curves, example queries (one page);
    ``mlflow_run_url``: the run's MLflow page, linked from the report when given."""
    path = write_report(RunDir(cfg.out), mlflow_run_url=mlflow_run_url)
    log(f"report: {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return {"report": str(path)}


STAGES: dict[str, Callable[..., dict]] = {
    "prepare": prepare, "graph": graph, "features": features, "neighbors": neighbors,
    "train": train, "export": export, "index": index, "evaluate": evaluate, "report": report}


def run_all(cfg: PipelineConfig, log: Log = print) -> dict:
    out: dict = {}  # prepare, the first stage, checks the config and writes config.json
    t_all = time.perf_counter()
    for name, stage in STAGES.items():
        t0 = time.perf_counter()
        out.update(stage(cfg, log=log))
        log(f"[{name}] done in {time.perf_counter() - t0:.1f}s (total {time.perf_counter() - t_all:.1f}s)")
    return out
