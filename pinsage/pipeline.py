"""The whole chain as stage functions over one run directory.

Each stage reads what earlier stages wrote under ``out``, writes its own outputs atomically and
returns the paths it wrote. ``tasks/`` wraps these for Airflow and MLflow; ``run_all`` chains them
in-process for ``python -m pinsage run``.

    out/dataset/      contract-format copy when the input needed an adapter (MovieLens)
    out/prepare/      items.parquet, train.parquet, valid.parquet, test.parquet, summary.json
    out/features/     features.parquet, features_manifest.json, word_vectors.bin (fitted, for cold start)
    out/graph/        graph.npz
    out/neighbors/    neighbors.parquet, visits.npz, holdout_fold*.parquet (training neighbourhoods)
    out/train/        last.pt (resumable checkpoint), model.pt, model_config.json, history.json
    out/embeddings/   part-*.parquet, manifest.json
    out/index/        index.faiss, ids.parquet, manifest.json
    out/metrics.json, out/metrics.md, out/ranks.parquet (per-pair ranks of every method)
    out/report.html   metrics vs baselines, training curves, example queries (self-contained page)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from . import baselines, distributed
from .adapters import resolve_dataset_dir
from .dataset import DatasetError, load_dataset
from .evaluation import embedding_scorer, evaluate_scorer, markdown_table, metrics_from_ranks
from .features import FeatureConfig, build_features, feature_blocks, feature_matrix, save_features
from .graph import BipartiteGraph, build_graph, without_contexts
from .index import IndexConfig, build_index, save_index
from .io import atomic_dir, read_npz, write_json, write_npz, write_table, write_text
from .model import ModelConfig, PinSage, load_model, save_model
from .params import check_catalogue, check_config
from .resources import cpu_threads
from .sampler import hard_negative_band, positive_pairs
from .split import split_interactions
from .train import TrainConfig, epoch_pairs, train_model
from .walks import Neighbors, VisitTable, WalkConfig, context_folds, random_walk_neighbors

Log = Callable[[str], None]


@dataclass
class PipelineConfig:
    data: str = "data/ml-latest-small"  # dataset directory (contract format, or MovieLens via adapter)
    out: str = "runs/latest"  # run directory: every artifact of the run lives under it
    seed: int = 0
    max_timestamp: int | None = None  # train as of this unix time (daily retrains / backfills)
    protocol: str = "tail"  # evaluation pairs (DESIGN.md): "tail", the paper's; "last-item", leave-one-out
    pixie_walks_per_item: int = 4000  # the Pixie baseline walks far more from its few queries
    engine: str = "local"  # "local": in-process; "ray": neighbourhoods and export on a Ray cluster
    ray_address: str | None = None  # Ray cluster for engine "ray" (e.g. ray://head:10001); None: start a local one
    # CPU threads each stage may use (torch, numba); 0: $PINSAGE_CPUS, else what the OS gives this
    # process (affinity, cgroup quota). Pools sized to the whole machine thrash when tasks share it.
    cpus: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    walks: WalkConfig = field(default_factory=WalkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    def with_seed(self, seed: int) -> "PipelineConfig":
        """Propagate one seed to every stage that draws random numbers."""
        cfg = dataclasses.replace(self, seed=seed)
        cfg.features = dataclasses.replace(self.features, seed=seed)
        cfg.walks = dataclasses.replace(self.walks, seed=seed)
        cfg.train = dataclasses.replace(self.train, seed=seed)
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        from .sampler import SamplerConfig

        d = dict(d)
        train = dict(d.pop("train", {}))
        sampler = SamplerConfig(**train.pop("sampler", {}))
        return cls(features=FeatureConfig(**d.pop("features", {})), walks=WalkConfig(**d.pop("walks", {})),
                   model=ModelConfig(**d.pop("model", {})), train=TrainConfig(sampler=sampler, **train),
                   index=IndexConfig(**d.pop("index", {})), **d)


def _sized(stage: Callable[..., dict]) -> Callable[..., dict]:
    """Run a stage with its thread pools sized to the run's CPU budget (``resources.cpu_threads``)."""
    @functools.wraps(stage)
    def run(cfg: PipelineConfig, *args, **kwargs) -> dict:
        with cpu_threads(cfg.cpus):
            return stage(cfg, *args, **kwargs)
    return run


def _out(cfg: PipelineConfig, *parts: str) -> Path:
    return Path(cfg.out).joinpath(*parts)


# ---------------------------------------------------------------------------------------------
# Stage 1: prepare -- validate, split, dense indices

def prepare(cfg: PipelineConfig, log: Log = print) -> dict:
    check_config(cfg)
    root = resolve_dataset_dir(cfg.data, _out(cfg, "dataset"))
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
    index = pd.Index(items["item_id"])
    train = split.train.sort_values(["context_id", "order"], kind="stable").reset_index(drop=True)
    train["item"] = index.get_indexer(train["item_id"]).astype(np.int64)
    train["context"] = pd.factorize(train["context_id"], sort=True)[0].astype(np.int64)
    d = _out(cfg, "prepare")
    summary = {"dataset": str(root), "has_timestamps": bool(ds.has_timestamps),
               "n_items": int(len(items)), "n_contexts": int(train["context"].max() + 1) if len(train) else 0,
               "n_train_interactions": int(len(train)), "n_valid_pairs": int(len(split.valid)),
               "n_test_pairs": int(len(split.test)), "max_timestamp": cfg.max_timestamp,
               "protocol": cfg.protocol}
    with atomic_dir(d) as tmp:  # the five files appear together or not at all (a full disk, a kill)
        write_table(tmp / "items.parquet", pa.Table.from_pandas(items, preserve_index=False))
        write_table(tmp / "train.parquet", pa.Table.from_pandas(train, preserve_index=False))
        for name, pairs in (("valid", split.valid), ("test", split.test)):
            pairs = pairs.reset_index(drop=True).copy()
            pairs["query"] = index.get_indexer(pairs["query_item"]).astype(np.int64)
            pairs["target"] = index.get_indexer(pairs["target_item"]).astype(np.int64)
            write_table(tmp / f"{name}.parquet", pa.Table.from_pandas(pairs, preserve_index=False))
        write_json(tmp / "summary.json", summary)
    log(f"prepare: {summary['n_items']} items, {summary['n_contexts']} contexts, "
        f"{summary['n_train_interactions']} training interactions, {summary['n_valid_pairs']} validation "
        f"and {summary['n_test_pairs']} test pairs ({cfg.protocol} protocol)")
    return {"prepare_dir": str(d)}


def _summary(cfg: PipelineConfig) -> dict:
    return json.loads(_out(cfg, "prepare", "summary.json").read_text())


def _train_table(cfg: PipelineConfig) -> pd.DataFrame:
    return pq.read_table(_out(cfg, "prepare", "train.parquet"),
                         columns=["context", "item", "weight", "order"]).to_pandas()


def _pairs(cfg: PipelineConfig, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(_out(cfg, "prepare", f"{name}.parquet"), columns=["query", "target"])
    return t.column("query").to_numpy(), t.column("target").to_numpy()


def _item_ids(cfg: PipelineConfig) -> np.ndarray:
    return pq.read_table(_out(cfg, "prepare", "items.parquet"), columns=["item_id"]) \
        .column("item_id").to_numpy(zero_copy_only=False).astype(str)


# ---------------------------------------------------------------------------------------------
# Stages 2-4: graph, features, neighbourhoods

def graph(cfg: PipelineConfig, log: Log = print) -> dict:
    s, train = _summary(cfg), _train_table(cfg)
    g = build_graph(train["item"].to_numpy(), train["context"].to_numpy(), s["n_items"], s["n_contexts"],
                    weights=train["weight"].to_numpy())
    path = _out(cfg, "graph", "graph.npz")
    g.save(path)
    log(f"graph: {g.n_items} items, {g.n_contexts} contexts, {g.n_edges} edges")
    return {"graph": str(path)}


@_sized
def features(cfg: PipelineConfig, log: Log = print) -> dict:
    t0 = time.perf_counter()
    items = pq.read_table(_out(cfg, "prepare", "items.parquet")).to_pandas()
    degree = np.bincount(_train_table(cfg)["item"].to_numpy(), minlength=len(items))
    fcfg = cfg.features  # VGG16 runs where training does unless features.device says otherwise
    if fcfg.device == "auto":
        fcfg = dataclasses.replace(fcfg, device=cfg.train.device)
    table, manifest = build_features(items["item_id"].to_numpy(), items["title"], items["text"], degree,
                                     fcfg, image_paths=items.get("image_path"),
                                     image_root=_summary(cfg)["dataset"], log=log,
                                     save_vectors=_out(cfg, "features", "word_vectors.bin"))  # for cold start
    path = save_features(_out(cfg, "features"), table, manifest)
    log(f"features: {table.num_rows} items x {feature_matrix(table).shape[1]} dims "
        f"({', '.join(manifest['columns'])}) in {time.perf_counter() - t0:.1f}s")
    return {"features": str(path)}


def _hard_negative_depth(n_items: int, cfg: PipelineConfig) -> int:
    reach = cfg.walks.walks_per_item * cfg.walks.max_walk_length  # most distinct items one source can visit
    return hard_negative_band(n_items, reach)[1] if cfg.train.sampler.hard_negatives else 0


def walk_visits(graph: BipartiteGraph | dict, sources: np.ndarray, m: int, config: WalkConfig,
                label: str = "neighbors: walks") -> VisitTable:
    """``visit_counts_topm`` over ``sources`` in ~20 slices, with a progress bar.

    Each source's walks depend only on (seed, source), so the slices give exactly the table of one
    call; the walk tables (alias tables of weighted graphs) are built once and shared by all slices.
    """
    from .progress import Progress
    from .walks import visit_counts_topm, walk_tables

    tables = walk_tables(graph) if isinstance(graph, BipartiteGraph) else graph
    sources = np.asarray(sources, dtype=np.int64)
    step = max(4096, -(-len(sources) // 20))
    parts = []
    with Progress(label, len(sources), "items") as bar:
        for s in range(0, len(sources), step):
            chunk = sources[s:s + step]
            parts.append(visit_counts_topm(tables, chunk, m, config.walks_per_item, config.restart_prob,
                                           config.max_walk_length, config.seed))
            bar.update(len(chunk))
    if not parts:
        return VisitTable(np.zeros((0, m), np.int32), np.zeros((0, m), np.int32))
    return VisitTable(np.concatenate([v.items for v in parts]), np.concatenate([v.counts for v in parts]))


@_sized
def neighbors(cfg: PipelineConfig, log: Log = print) -> dict:
    t0 = time.perf_counter()
    g = BipartiteGraph.load(_out(cfg, "graph", "graph.npz"))
    depth = _hard_negative_depth(g.n_items, cfg)
    if cfg.engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {cfg.engine!r}")
    d = _out(cfg, "neighbors")
    folds = cfg.walks.holdout_folds
    fold_of = context_folds(g.n_contexts, folds, cfg.walks.seed) if folds > 1 else None
    item_ids = _item_ids(cfg)
    with _walk_engine(cfg, log) as walk:
        nbrs, visits = walk(g, depth, "neighbors: walks")
        # Training neighbourhoods without the query's own context (see WalkConfig.holdout_folds).
        for f in range(folds if folds > 1 else 0):
            fold_nbrs, _ = walk(without_contexts(g, fold_of == f), 0, f"neighbors: walks without fold {f}")
            fold_nbrs.save(d / f"holdout_fold{f}.parquet", item_ids)
    nbrs.save(d / "neighbors.parquet", item_ids)
    write_npz(d / "visits.npz", items=visits.items, counts=visits.counts)
    log(f"neighbors: top-{cfg.walks.top_t} of {cfg.walks.walks_per_item} walks/item, "
        f"{nbrs.mask.any(axis=1).mean():.1%} items with neighbours"
        f"{f', + {folds} hold-out tables for training' if folds > 1 else ''}, {time.perf_counter() - t0:.1f}s")
    return {"neighbors": str(d / "neighbors.parquet"), "visits": str(d / "visits.npz")}


@contextlib.contextmanager
def _walk_engine(cfg: PipelineConfig, log: Log):
    """Yields ``walk(graph, hard_negative_depth, label) -> (Neighbors, VisitTable)`` on the configured engine."""
    if cfg.engine == "ray":
        from .engine_ray import random_walk_neighbors_ray, ray_session

        with ray_session(cfg.ray_address or None):
            def walk(graph, depth, label):
                stats: dict = {}
                out = random_walk_neighbors_ray(graph, cfg.walks, hard_negative_depth=depth, stats=stats)
                log(f"{label}: engine ray ({cfg.ray_address or 'local cluster'}), {stats['n_shards']} tasks, "
                    f"graph shared zero-copy: {stats['zero_copy']}")
                return out
            yield walk
    else:
        def walk(graph, depth, label):  # the default counter, sliced to show progress
            return random_walk_neighbors(
                graph, cfg.walks, hard_negative_depth=depth,
                count_visits=lambda gr, m, wc: walk_visits(gr, np.arange(gr.n_items), m, wc, label=label))
        yield walk


def holdout_neighbors(cfg: PipelineConfig) -> tuple[list[Neighbors], np.ndarray] | None:
    """The training neighbour tables of ``WalkConfig.holdout_folds`` and the fold of every context,
    or None when training uses the served table."""
    folds = cfg.walks.holdout_folds
    if folds <= 1:
        return None
    g = BipartiteGraph.load(_out(cfg, "graph", "graph.npz"))
    tables = [Neighbors.load(_out(cfg, "neighbors", f"holdout_fold{f}.parquet")) for f in range(folds)]
    return tables, context_folds(g.n_contexts, folds, cfg.walks.seed)


def _load_inputs(cfg: PipelineConfig):
    feats = feature_matrix(pq.read_table(_out(cfg, "features", "features.parquet")))
    nbrs = Neighbors.load(_out(cfg, "neighbors", "neighbors.parquet"))
    return feats, nbrs


# ---------------------------------------------------------------------------------------------
# Stages 5-7: train, export, index

def build_model(cfg: PipelineConfig, feats: np.ndarray) -> PinSage:
    mcfg = dataclasses.replace(cfg.model, input_dim=feats.shape[1], n_items=len(feats))
    return PinSage(mcfg, feature_mean=feats.mean(axis=0), feature_std=feats.std(axis=0))


def validation_mrr(model: PinSage, feats: np.ndarray, nbrs: Neighbors, queries, targets) -> float:
    from .export import export_embeddings

    emb = export_embeddings(model, feats, nbrs)
    return metrics_from_ranks(evaluate_scorer(embedding_scorer(emb), queries, targets))["mrr"]


def negative_candidates(degree: np.ndarray, sampler) -> tuple[np.ndarray, np.ndarray | None]:
    """The items negatives are drawn from, and their weights (None: uniform).

    ``negatives_from="trained"`` leaves items without training interactions out, so their zero-initialised
    id vectors are never pushed away as negatives and their embeddings stay feature-driven (cold start).
    ``negative_power`` p draws with P ~ degree^p (items without interactions count as degree 1).
    """
    if sampler.negatives_from not in ("catalogue", "trained"):
        raise ValueError(f"negatives_from must be 'catalogue' or 'trained', got {sampler.negatives_from!r}")
    candidates = np.arange(len(degree)) if sampler.negatives_from == "catalogue" else np.flatnonzero(degree > 0)
    if len(candidates) == 0:
        candidates = np.arange(len(degree))
    if sampler.negative_power == 0:
        return candidates, None
    return candidates, np.maximum(degree[candidates], 1).astype(np.float64) ** sampler.negative_power


@_sized
def train(cfg: PipelineConfig, log: Log = print, on_epoch_end=None,
          group: distributed.ProcessGroup | None = None) -> dict:
    """Stage 5. With ``train.nproc > 1`` this launches data-parallel processes (torchrun) that each
    run this function with their ``group``; process 0 writes the model and the history."""
    if group is None and cfg.train.nproc > 1:
        config_path = _out(cfg, "train", "ddp_config.json")
        write_json(config_path, cfg.to_dict())
        distributed.launch(config_path, cfg.train.nproc, log=log)
        history = json.loads(_out(cfg, "train", "history.json").read_text())
        if on_epoch_end is not None:
            for record in history["epochs"]:
                on_epoch_end(record)
        return {"model_dir": str(_out(cfg, "train")), "best_epoch": history["best_epoch"]}
    group = group or distributed.SINGLE_PROCESS
    feats, nbrs = _load_inputs(cfg)
    v = read_npz(_out(cfg, "neighbors", "visits.npz"))
    visits = VisitTable(v["items"], v["counts"])
    train_rows = _train_table(cfg)
    context, item = train_rows["context"].to_numpy(), train_rows["item"].to_numpy()
    ordered = _summary(cfg)["has_timestamps"]
    window = cfg.train.sampler.positive_window

    holdout = holdout_neighbors(cfg)

    def pairs_for_epoch(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([cfg.train.seed, epoch, 1])
        pairs = positive_pairs(context, item, window, ordered, rng, with_context=holdout is not None)
        if holdout is not None:
            pairs[:, 2] = holdout[1][pairs[:, 2]]  # context -> its fold: which table the pair trains on
        return pairs[rng.permutation(len(pairs))[:epoch_pairs(len(pairs), len(feats), cfg.train)]]

    candidates, weights = negative_candidates(np.bincount(item, minlength=len(feats)), cfg.train.sampler)
    vq, vt = _pairs(cfg, "valid")
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of what a seed reproduces
    model = build_model(cfg, feats)
    d = _out(cfg, "train")
    model, state = train_model(
        model, pairs_for_epoch, feats, nbrs, visits, cfg.train, candidate_items=candidates,
        candidate_weights=weights,
        checkpoint_dir=d, evaluate_fn=lambda m: validation_mrr(m, feats, nbrs, vq, vt),
        on_epoch_end=on_epoch_end, log=lambda s: log(f"train: {s}"), group=group,
        fold_neighbors=None if holdout is None else holdout[0])
    if not group.is_main:
        return {"model_dir": str(d), "best_epoch": state.best_epoch}
    save_model(model, d)
    write_json(d / "history.json", {"best_epoch": state.best_epoch, "best_validation_mrr": state.best_score,
                                    "epochs": state.history})
    log(f"train: best epoch {state.best_epoch}, validation MRR {state.best_score:.4f}")
    return {"model_dir": str(d), "best_epoch": state.best_epoch}


@_sized
def export(cfg: PipelineConfig, log: Log = print, model_dir: str | None = None) -> dict:
    from .embeddings import write_embeddings
    from .export import export_embeddings

    t0 = time.perf_counter()
    feats, nbrs = _load_inputs(cfg)
    model = load_model(model_dir or _out(cfg, "train"))
    if cfg.engine == "ray":
        from .engine_ray import ray_session
        from .export_ray import export_embeddings_ray

        with ray_session(cfg.ray_address or None):
            emb = export_embeddings_ray(model, feats, nbrs)
        log(f"export: engine ray ({cfg.ray_address or 'local cluster'}), map / join / reduce per layer")
    else:
        emb = export_embeddings(model, feats, nbrs, progress=True)
    parts = write_embeddings(_out(cfg, "embeddings"), _item_ids(cfg), emb)
    log(f"export: {len(emb)} embeddings of {emb.shape[1]} dims in {len(parts)} part(s), "
        f"{time.perf_counter() - t0:.1f}s")
    return {"embeddings_dir": str(_out(cfg, "embeddings"))}


@_sized
def index(cfg: PipelineConfig, log: Log = print) -> dict:
    from .embeddings import read_embeddings

    ids, emb = read_embeddings(_out(cfg, "embeddings"))
    idx = build_index(emb, cfg.index)
    path = save_index(_out(cfg, "index"), idx, ids)
    log(f"index: {type(idx).__name__} over {idx.ntotal} items")
    return {"index_dir": str(path)}


# ---------------------------------------------------------------------------------------------
# Stage 8: evaluate PinSage and the baselines under full ranking

@dataclass
class TunedBaselines:
    """EASE and RP3beta at their validation-chosen settings (see ``baselines.select_on_validation``).

    ``scorers``: method -> scorer; ``hyperparameters``: method -> chosen params; ``selection``:
    method -> the grid with each point's validation MRR; ``skipped``: method -> why it did not run.
    """

    scorers: dict = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def tuned_baselines(g: BipartiteGraph, valid_queries: np.ndarray, valid_targets: np.ndarray,
                    ease_max_items: int) -> TunedBaselines:
    """Choose EASE's lambda and RP3beta's (alpha, beta) on the validation pairs (they never see test);
    EASE is skipped above ``ease_max_items`` items with interactions."""
    out = TunedBaselines()
    grids = {"rp3beta": lambda: baselines.rp3beta_scorers(g)}
    reason = baselines.ease_skip_reason(g, ease_max_items)
    if reason is None:
        grids = {"ease": lambda: baselines.ease_scorers(g), **grids}
    else:
        out.skipped["ease"] = reason
    for name, grid in grids.items():
        chosen = baselines.select_on_validation(grid(), valid_queries, valid_targets)
        out.scorers[name], out.hyperparameters[name], out.selection[name] = chosen.scorer, chosen.params, chosen.grid
    return out


def _settings_note(tuned: TunedBaselines) -> str:
    """Markdown lines under the metrics tables: the chosen settings and what was skipped."""
    lines = [f"- {name}: " + ", ".join(f"{k} {v:g}" for k, v in params.items()) + " (best validation MRR of "
             f"{len(tuned.selection[name])} settings)" for name, params in tuned.hyperparameters.items()]
    lines += [f"- {name}: skipped, {why}" for name, why in tuned.skipped.items()]
    return "\n".join(lines) + "\n" if lines else ""


@_sized
def evaluate(cfg: PipelineConfig, log: Log = print) -> dict:
    from .embeddings import read_embeddings

    t0 = time.perf_counter()
    ids, emb = read_embeddings(_out(cfg, "embeddings"))
    if not np.array_equal(ids, _item_ids(cfg)):
        raise ValueError("embeddings are not in catalogue order; re-run the export")
    g = BipartiteGraph.load(_out(cfg, "graph", "graph.npz"))
    blocks = feature_blocks(pq.read_table(_out(cfg, "features", "features.parquet")))
    w = cfg.walks
    scorers = {
        "pinsage": embedding_scorer(emb),
        "popularity": baselines.popularity(g),
        "annotation": baselines.annotation(blocks["annotation"]),
        "combined": baselines.combined(blocks),
        "pixie": baselines.pixie(g, cfg.pixie_walks_per_item, w.restart_prob, w.max_walk_length, cfg.seed),
        "itemknn": baselines.itemknn(g),
    }
    if "visual" in blocks:
        scorers["visual"] = baselines.annotation(blocks["visual"])
    t_tune = time.perf_counter()
    tuned = tuned_baselines(g, *_pairs(cfg, "valid"), ease_max_items=baselines.EASE_MAX_ITEMS)
    t_tune = time.perf_counter() - t_tune
    scorers.update(tuned.scorers)
    result, rank_tables = {}, []
    for split_name in ("test", "valid"):
        q, t = _pairs(cfg, split_name)
        ranks = {name: evaluate_scorer(fn, q, t) for name, fn in scorers.items()}
        result[split_name] = (len(q), {name: metrics_from_ranks(r) for name, r in ranks.items()})
        rank_tables.append(pd.DataFrame({"split": split_name, "query": q, "target": t, **ranks}))
    # Per-pair ranks: what paired bootstrap comparisons between methods and runs resample.
    write_table(_out(cfg, "ranks.parquet"),
                pa.Table.from_pandas(pd.concat(rank_tables, ignore_index=True), preserve_index=False))
    n_test, test = result["test"]
    n_valid, valid = result["valid"]
    metrics = {"n_pairs": n_test, "methods": test, "validation": {"n_pairs": n_valid, "methods": valid},
               "hyperparameters": tuned.hyperparameters, "selection": tuned.selection, "skipped": tuned.skipped}
    write_json(_out(cfg, "metrics.json"), metrics)
    table = (markdown_table(test, n_test, "Test") + "\n" + markdown_table(valid, n_valid, "Validation"))
    note = _settings_note(tuned)
    if note:
        table += "\nSettings chosen on the validation pairs:\n\n" + note
    write_text(_out(cfg, "metrics.md"), table)
    log(f"evaluate: {len(scorers)} methods in {time.perf_counter() - t0:.1f}s "
        f"({', '.join(tuned.selection)} grids on validation: {t_tune:.1f}s)\n\n{table}")
    return {"metrics": str(_out(cfg, "metrics.json")), "metrics_table": str(_out(cfg, "metrics.md")),
            "ranks": str(_out(cfg, "ranks.parquet"))}


def report(cfg: PipelineConfig, log: Log = print, mlflow_run_url: str | None = None) -> dict:
    """``report.html``: metrics against the baselines, training curves, example queries (one page);
    ``mlflow_run_url``: the run's MLflow page, linked from the report when given."""
    from .report import write_report

    path = write_report(cfg.out, mlflow_run_url=mlflow_run_url)
    log(f"report: {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return {"report": str(path)}


STAGES: dict[str, Callable[..., dict]] = {
    "prepare": prepare, "graph": graph, "features": features, "neighbors": neighbors,
    "train": train, "export": export, "index": index, "evaluate": evaluate, "report": report}


def run_all(cfg: PipelineConfig, log: Log = print) -> dict:
    out: dict = {}
    check_config(cfg)  # a parameter that can never work is refused before anything is written
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    write_json(_out(cfg, "config.json"), cfg.to_dict())
    t_all = time.perf_counter()
    for name, stage in STAGES.items():
        t0 = time.perf_counter()
        out.update(stage(cfg, log=log))
        log(f"[{name}] done in {time.perf_counter() - t0:.1f}s (total {time.perf_counter() - t_all:.1f}s)")
    return out
