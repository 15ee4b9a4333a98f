"""The ``new-items`` experiment (docs/evaluation.md): items that arrive after training.

    python -m pinsage experiment --protocol new-items --out runs/new-items --seeds 3

Per seed: :func:`pinsage.data.split.split_new_items` removes a seeded 10% of the items with interactions
(all their interactions) and the models are trained on the rest, each run early-stopped on the
``tail`` validation pairs of the items it knows (the new items' pairs are never seen). Then the new
items arrive, without retraining: for r in (0, 3) their features and their first r interactions
join the graph through the cold-start path (:func:`pinsage.serve.coldstart.embed_new_items`: the run's
fitted word vectors, walks from the new items over the extended graph, content neighbourhoods for
items with none, the MapReduce export with the trained network). Every method sees that same
revealed graph:

- ``pinsage``: the shipped model through the cold-start path;
- ``no convolution (K=0), features only``: the same network without convolutions or id vectors
  (what features alone give through the same path);
- ``annotation``, ``combined`` (and ``visual`` with images): content similarity;
- ``itemknn``, ``rp3beta`` (alpha, beta chosen on the new items' validation pairs), ``ease``,
  ``pixie``, ``popularity``: on the revealed graph.

Users' tags (the dataset's optional tags file) follow the rule of docs/evaluation.md with every
interaction of a new item as held out (:func:`pinsage.data.tags.allowed_tags`): the training data gets
the allowed tags of the items that are not new as its tags file (its own ``prepare`` then applies the
``tail`` rule on top), and the new items arrive with their allowed tags already in their text.

Writes ``new_items.json`` and ``new_items.md`` under the output directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage import pipeline
from pinsage.data.adapters import resolve_dataset_dir
from pinsage.data.dataset import load_dataset
from pinsage.data.split import DIRECTIONS, split_new_items
from pinsage.data.tags import allowed_tags, append_tags
from pinsage.eval import baselines, tuning
from pinsage.eval.metrics import embedding_scorer, evaluate_scorer, metrics_from_ranks
from pinsage.eval.selection import best_baseline
from pinsage.eval.stats import aggregate, paired_bootstrap
from pinsage.experiments.runner import Variant, run_variant
from pinsage.experiments.tables import interval_rows, mean_std
from pinsage.export.embeddings import read_embeddings, read_prior
from pinsage.features.build import feature_blocks
from pinsage.run.config import PipelineConfig
from pinsage.run.layout import RunDir
from pinsage.serve.coldstart import embed_new_items, extended_graph
from pinsage.util.io import write_json, write_table, write_text

Log = Callable[[str], None]
REVEALED = (0, 3)  # interactions revealed per new item (docs/evaluation.md: r = 0 and r = 3)
FEATURES_K0 = "no convolution (K=0), features only"
# The new items' quality bar per (direction, revealed): PinSage's test MRR must reach this multiple of
# the best other method's, chosen on validation (``bar.ratio_met`` in new_items.json)
BAR = {("to-new", 0): 1.1, ("to-new", 3): 1.3, ("from-new", 3): 1.2}


def write_dataset(directory: Path, items: pd.DataFrame, interactions: pd.DataFrame, source: Path,
                  tags: pd.DataFrame | None = None) -> Path:
    """A contract-format dataset (Parquet), with ``tags`` as its tags file when given (the source's is
    never linked: it holds every tag); the source's other entries (images/) are linked in."""
    directory.mkdir(parents=True, exist_ok=True)
    cols = [c for c in ("item_id", "title", "text", "image_path") if c in items.columns]
    write_table(directory / "items.parquet", pa.Table.from_pandas(items[cols], preserve_index=False))
    cols = [c for c in ("context_id", "item_id", "weight", "timestamp") if c in interactions.columns]
    write_table(directory / "interactions.parquet", pa.Table.from_pandas(interactions[cols], preserve_index=False))
    if tags is not None:
        cols = [c for c in ("context_id", "item_id", "tag", "timestamp") if c in tags.columns]
        write_table(directory / "tags.parquet", pa.Table.from_pandas(tags[cols], preserve_index=False))
    for entry in source.iterdir():
        if entry.name.split(".")[0] not in ("items", "interactions", "tags") and not (directory / entry.name).exists():
            os.symlink(entry.resolve(), directory / entry.name)
    return directory


def _pair_indices(index: pd.Index, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (index.get_indexer(pairs["query_item"]).astype(np.int64),
            index.get_indexer(pairs["target_item"]).astype(np.int64))


def _scorers(cfg: PipelineConfig, cold: dict[str, Path], run: Path, data: Path, new_ids: set,
             valid: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict, dict]:
    """Every method's scorer over the extended catalogue per direction (the tuned baselines choose
    their settings on that direction's validation pairs), and those settings."""
    out = RunDir(next(iter(cold.values())))
    ext_ids = out.item_ids()
    scorers = {}
    for name, d in cold.items():
        ids, emb = read_embeddings(RunDir(d).embeddings)
        assert np.array_equal(ids.astype(str), ext_ids.astype(str)), f"{d}: embeddings not in catalogue order"
        scorers[name] = embedding_scorer(emb, read_prior(RunDir(d).embeddings))
    blocks = feature_blocks(pq.read_table(out.features_table))
    scorers["annotation"] = baselines.annotation(blocks["annotation"])
    if "visual" in blocks:
        scorers["visual"] = baselines.annotation(blocks["visual"])
    scorers["combined"] = baselines.combined(blocks)
    ds = load_dataset(data)
    g, _ = extended_graph(run, ds.interactions, pd.Index(ext_ids.astype(str)), new_ids)  # the revealed graph
    w = cfg.walks
    scorers["popularity"] = baselines.popularity(g)
    scorers["pixie"] = baselines.pixie(g, cfg.pixie_walks_per_item, w.restart_prob, w.max_walk_length, cfg.seed)
    per_direction, chosen = {}, {}
    for direction, pairs in valid.items():  # itemknn, ease, rp3beta
        tuned = tuning.tuned_baselines(g, *pairs, ease_max_items=baselines.EASE_MAX_ITEMS)
        per_direction[direction], chosen[direction] = {**scorers, **tuned.scorers}, tuned.hyperparameters
    return per_direction, chosen


def run_new_items_experiment(cfg: PipelineConfig, seeds: int, log: Log = print, revealed=REVEALED,
                             draws: int = 1000, only_seeds: tuple[int, ...] | None = None) -> dict | None:
    """Train, cold-start and evaluate for ``seeds`` seeds; write new_items.json / new_items.md.

    Each seed's results are kept in ``seed{i}/new_items_seed.json``; ``only_seeds`` computes just those
    seeds (side by side in separate processes) and returns None; a later call without it reads them
    and renders."""
    root = Path(cfg.out)
    source = resolve_dataset_dir(cfg.data, root / "dataset")
    ds = load_dataset(source)
    cases = {(d, r): {"test": [], "valid": [], "ranks": {}, "counts": []} for r in revealed for d in DIRECTIONS}
    settings: dict = {}
    for s in range(seeds):
        if only_seeds is not None and s not in only_seeds:
            continue
        seed_cfg = cfg.with_seed(cfg.seed + s)
        sdir = root / f"seed{s}"
        kept = sdir / "new_items_seed.json"
        if kept.exists():
            saved = json.loads(kept.read_text())
            for key, rec in saved["cases"].items():
                d, r = key.split("|")
                case = cases[(d, int(r))]
                case["test"].append(rec["test"])
                case["valid"].append(rec["valid"])
                case["counts"].append(rec["counts"])
                for name, x in rec["ranks"].items():
                    case["ranks"].setdefault(name, []).append(np.asarray(x))
                settings.setdefault(f"{d}, r = {r}", []).append(saved["settings"][key])
            continue
        this_seed: dict = {"cases": {}, "settings": {}}
        split = split_new_items(ds.interactions, ds.has_timestamps, seed=seed_cfg.seed)
        new_ids = set(split.new_items["item_id"])
        # every interaction of a new item leaves training (the revealed ones too): all held out for the tags
        tags = None if ds.tags is None else allowed_tags(ds.tags, split.arrivals)
        base_tags = None if tags is None else tags[~tags["item_id"].isin(new_ids)]
        base = write_dataset(sdir / "base_data", ds.items[~ds.items["item_id"].isin(new_ids)], split.train, source,
                             tags=base_tags)
        # the new items arrive with their allowed tags in their text (cold start reads the text only)
        arriving = ds.items if tags is None else append_tags(ds.items, tags[tags["item_id"].isin(new_ids)])
        runs = {"pinsage": sdir / "pinsage"}
        run_cfg = dataclasses.replace(seed_cfg, data=str(base), out=str(runs["pinsage"]), protocol="tail")
        if not RunDir(runs["pinsage"]).metrics.exists():
            log(f"new-items: seed {seed_cfg.seed}: training on {len(split.train)} interactions of the "
                f"items that are not new ({len(new_ids)} new items held back)")
            pipeline.run_all(run_cfg, log=log)
        runs[FEATURES_K0] = Path(run_variant(run_cfg, Variant.of(FEATURES_K0, model__n_layers=0,
                                                                 model__id_embedding=False), log)["out"])
        for r in revealed:
            data_r = write_dataset(sdir / f"r{r}" / "data", arriving,
                                    pd.concat([split.train, split.revealed(r)], ignore_index=True), source)
            cold = {}
            for name, run in runs.items():
                out = sdir / f"r{r}" / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
                if not RunDir(out).coldstart.exists():
                    embed_new_items(run, data_r, out, log=lambda m: None)
                cold[name] = out
            ext = pd.Index(RunDir(cold["pinsage"]).item_ids())
            pairs = {d: {sp: _pair_indices(ext, split.pairs(r, sp, d)) for sp in ("valid", "test")}
                     for d in DIRECTIONS}
            scorers, chosen = _scorers(seed_cfg, cold, runs["pinsage"], data_r, new_ids,
                                       {d: pairs[d]["valid"] for d in DIRECTIONS})
            for d in DIRECTIONS:
                settings.setdefault(f"{d}, r = {r}", []).append(chosen[d])
                rec, mine = cases[(d, r)], {}
                for sp in ("test", "valid"):
                    q, t = pairs[d][sp]
                    ranks = {name: evaluate_scorer(fn, q, t) for name, fn in scorers[d].items()}
                    mine[sp] = {name: metrics_from_ranks(x) for name, x in ranks.items()}
                    rec[sp].append(mine[sp])
                    if sp == "test":
                        mine["ranks"] = {name: x.tolist() for name, x in ranks.items()}
                        for name, x in ranks.items():
                            rec["ranks"].setdefault(name, []).append(x)
                mine["counts"] = {"valid_pairs": len(pairs[d]["valid"][0]), "test_pairs": len(pairs[d]["test"][0]),
                                  "new_items": len(new_ids), "items": len(ext),
                                  "revealed_interactions": int(len(split.revealed(r)))}
                rec["counts"].append(mine["counts"])
                this_seed["cases"][f"{d}|{r}"], this_seed["settings"][f"{d}|{r}"] = mine, chosen[d]
                log(f"new-items: seed {seed_cfg.seed}, {d}, r = {r}: {mine['counts']}")
        write_json(kept, this_seed)
    if only_seeds is not None:
        return None
    report = {"seeds": seeds, "cases": []}
    for (d, r), rec in cases.items():
        test, valid = aggregate(rec["test"]), aggregate(rec["valid"])
        best = best_baseline({m: valid[m]["mrr"][0] for m in valid}, exclude=("pinsage", FEATURES_K0))
        boot = {f"pinsage vs {best}": paired_bootstrap(rec["ranks"]["pinsage"], rec["ranks"][best], draws),
                f"pinsage vs {FEATURES_K0}": paired_bootstrap(rec["ranks"]["pinsage"], rec["ranks"][FEATURES_K0],
                                                              draws)}
        counts = {k: float(np.mean([c[k] for c in rec["counts"]])) for k in rec["counts"][0]}
        ratio = test["pinsage"]["mrr"][0] / max(test[best]["mrr"][0], 1e-12)
        need = BAR.get((d, r))
        report["cases"].append({
            "direction": d, "revealed": r,
            "counts": counts, "table": {m: {**test[m], "valid_mrr": valid[m]["mrr"]} for m in test},
            "best_other": best, "ratio": ratio, "bootstrap_95": boot, "settings": settings[f"{d}, r = {r}"],
            "bar": {"ratio_needed": need, "ratio_met": need is not None and ratio >= need,
                    "interval_above_zero": boot[f"pinsage vs {best}"]["mrr"][0] > 0,
                    "above_features_k0": boot[f"pinsage vs {FEATURES_K0}"]["mrr"][0] > 0}})
    write_json(root / "new_items.json", report)
    md = markdown(report)
    write_text(root / "new_items.md", md)
    log("\n" + md)
    return report


def markdown(report: dict) -> str:
    lines = []
    for rep in report["cases"]:
        c, r = rep["counts"], rep["revealed"]
        lines += [f"#### new-items, {rep['direction']}, r = {r} revealed interactions per new item: test pairs "
                  f"({c['test_pairs']:.0f}; validation {c['valid_pairs']:.0f}), {c['new_items']:.0f} new items of "
                  f"{c['items']:.0f} ({100 * c['new_items'] / c['items']:.1f}%), mean ± std over "
                  f"{report['seeds']} seeds", "",
                  "| method | MRR | HR@10 | HR@50 | validation MRR |", "|---|---:|---:|---:|---:|"]
        order = sorted(rep["table"], key=lambda m: -rep["table"][m]["mrr"][0])
        for m in order:
            t = rep["table"][m]
            lines.append(f"| {m} | {mean_std(t['mrr'])} | {mean_std(t['hr@10'])} | {mean_std(t['hr@50'])} "
                         f"| {mean_std(t['valid_mrr'])} |")
        lines += ["", "| comparison (paired bootstrap, test pairs) | Δ MRR | Δ HR@10 |", "|---|---:|---:|"]
        lines += interval_rows(rep["bootstrap_95"])
        b = rep["bar"]
        need = f" (needs >= {b['ratio_needed']:.1f}x)" if b["ratio_needed"] else ""
        lines += ["", f"- pinsage / best baseline on validation ({rep['best_other']}) = {rep['ratio']:.2f}x{need}; "
                      f"interval above 0: {'yes' if b['interval_above_zero'] else 'no'}; above its K=0 "
                      f"features-only ablation (interval above 0): {'yes' if b['above_features_k0'] else 'no'}", ""]
    return "\n".join(lines)
