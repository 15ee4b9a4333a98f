"""Multi-seed experiments in the shape of the paper's Table 1 (methods and ablations) and Table 4 (T).

``python -m pinsage experiment --data DIR --out OUT --seeds 3`` runs, for every seed, the shared
stages once (prepare, graph, features, neighbours) and then each model variant in its own
sub-directory, and reports mean +- std over seeds of the test figures (settings are never chosen on
test pairs: every variant picks its epoch on validation MRR). Each comparison with a baseline also
gets a paired bootstrap over the evaluation pairs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import pipeline
from .io import write_json, write_text
from .pipeline import PipelineConfig

Log = Callable[[str], None]
BASELINES = ("popularity", "annotation", "visual", "combined", "pixie", "itemknn")
TABLE_METRICS = ("mrr", "hr@10", "hr@50")


@dataclass(frozen=True)
class Variant:
    name: str
    n_layers: int | None = None
    aggregator: str | None = None
    hard_negatives: bool | None = None
    top_t: int | None = None

    def apply(self, cfg: PipelineConfig) -> PipelineConfig:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model),
                                  train=dataclasses.replace(cfg.train, sampler=dataclasses.replace(cfg.train.sampler)),
                                  walks=dataclasses.replace(cfg.walks))
        if self.n_layers is not None:
            cfg.model.n_layers = self.n_layers
        if self.aggregator is not None:
            cfg.model.aggregator = self.aggregator
        if self.hard_negatives is not None:
            cfg.train.sampler.hard_negatives = self.hard_negatives
        if self.top_t is not None:
            cfg.walks.top_t = self.top_t
        return cfg


# Paper Table 1 ablations: the same inputs, id embeddings, loss and positives throughout.
TABLE1_VARIANTS = (
    Variant("no convolution (K=0)", n_layers=0),
    Variant("mean pooling", aggregator="mean", hard_negatives=False),
    Variant("mean pooling + hard negatives", aggregator="mean", hard_negatives=True),
    Variant("pinsage", aggregator="importance", hard_negatives=True),
)
TABLE4_T = (10, 20, 50)


def _link_shared(base: Path, out: Path, stages: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        link = out / stage
        if not link.exists():
            os.symlink((base / stage).resolve(), link, target_is_directory=True)


def run_variant(base_cfg: PipelineConfig, variant: Variant, log: Log) -> dict:
    """Train, export and evaluate one variant over the base run's shared stages."""
    out = Path(base_cfg.out) / "variants" / variant.name.replace(" ", "_").replace("/", "_")
    cfg = dataclasses.replace(variant.apply(base_cfg), out=str(out))
    shared = ("dataset", "prepare", "graph", "features") + (() if variant.top_t else ("neighbors",))
    _link_shared(Path(base_cfg.out), out, tuple(s for s in shared if (Path(base_cfg.out) / s).exists()))
    if variant.top_t:
        pipeline.neighbors(cfg, log=log)
    t0 = time.perf_counter()
    pipeline.train(cfg, log=log)
    train_seconds = time.perf_counter() - t0
    for stage in (pipeline.export, pipeline.evaluate):
        stage(cfg, log=lambda s: None)
    return {"out": str(out), "train_seconds": train_seconds}


def _ranks(out: str | Path, split: str = "test") -> pd.DataFrame:
    table = pq.read_table(Path(out) / "ranks.parquet").to_pandas()
    return table[table["split"] == split].reset_index(drop=True)


def paired_bootstrap(ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], draws: int = 1000,
                     seed: int = 0) -> dict[str, list[float]]:
    """95% interval of mean(metric_a - metric_b) over evaluation pairs, resampled with replacement.

    Args:
        ranks_a, ranks_b: per seed, (P_s,) ranks of the same pairs under methods a and b. Pairs are
            resampled jointly for a and b (paired); seeds with the same pairs share the draw.
    Returns:
        {"mrr": [lo, hi], "hr@10": [lo, hi]} of the difference a - b, averaged over seeds.
    """
    rng = np.random.default_rng(seed)
    diffs = {"mrr": [1.0 / a - 1.0 / b for a, b in zip(ranks_a, ranks_b)],
             "hr@10": [(a <= 10).astype(float) - (b <= 10).astype(float) for a, b in zip(ranks_a, ranks_b)]}
    sizes = [len(a) for a in ranks_a]
    same_pairs = len(set(sizes)) == 1
    out = {}
    for metric, per_seed in diffs.items():
        stats = np.empty(draws)
        for d in range(draws):
            shared = rng.integers(0, sizes[0], sizes[0]) if same_pairs else None
            stats[d] = np.mean([x[shared if same_pairs else rng.integers(0, len(x), len(x))].mean()
                                for x in per_seed])
        out[metric] = [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]
    return out


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """[{method: {metric: value}}] over seeds -> {method: {metric: [mean, std]}} (std with ddof=0).

    Methods missing from some seed (e.g. visual without images) are aggregated over the seeds that have them.
    """
    methods = sorted({m for run in per_seed for m in run})
    result = {}
    for m in methods:
        runs = [run[m] for run in per_seed if m in run]
        result[m] = {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))]
                     for k in runs[0]}
    return result


def _fmt(ms: list[float]) -> str:
    return f"{ms[0]:.4f} ± {ms[1]:.4f}"


def run_experiment(cfg: PipelineConfig, seeds: int, log: Log = print, t_values=TABLE4_T,
                   variants=TABLE1_VARIANTS, draws: int = 1000) -> dict:
    """Run every variant for ``seeds`` seeds; write experiment.json and experiment.md under cfg.out."""
    root = Path(cfg.out)
    t_variants = tuple(Variant(f"pinsage T={t}", top_t=t) for t in t_values)
    test_metrics: list[dict] = []
    test_ranks: dict[str, list[np.ndarray]] = {}
    train_time: dict[str, list[float]] = {}
    n_pairs = []
    for s in range(seeds):
        seed_cfg = dataclasses.replace(cfg.with_seed(cfg.seed + s), out=str(root / f"seed{s}"))
        log(f"experiment: seed {seed_cfg.seed}")
        for stage in ("prepare", "graph", "features", "neighbors"):
            pipeline.STAGES[stage](seed_cfg, log=log)
        metrics: dict[str, dict] = {}
        for variant in variants + t_variants:
            info = run_variant(seed_cfg, variant, log)
            m = json.loads((Path(info["out"]) / "metrics.json").read_text())
            ranks = _ranks(info["out"])
            metrics[variant.name] = m["methods"]["pinsage"]
            test_ranks.setdefault(variant.name, []).append(ranks["pinsage"].to_numpy())
            train_time.setdefault(variant.name, []).append(info["train_seconds"])
            for b in BASELINES:  # baselines do not depend on the variant: take them once per seed
                if b in m["methods"] and b not in metrics:
                    metrics[b] = m["methods"][b]
                    test_ranks.setdefault(b, []).append(ranks[b].to_numpy())
            n_pairs.append(m["n_pairs"])
        test_metrics.append(metrics)
    summary = aggregate(test_metrics)
    present_baselines = [b for b in BASELINES if b in summary]
    best_baseline = max(present_baselines, key=lambda b: summary[b]["mrr"][0])
    comparisons = {}
    for name in [v.name for v in variants]:
        for other in present_baselines + [v.name for v in variants if v.name != name]:
            if name == "pinsage" or other == best_baseline:
                comparisons[f"{name} vs {other}"] = paired_bootstrap(test_ranks[name], test_ranks[other], draws)
    report = {"seeds": seeds, "n_test_pairs": n_pairs[0], "best_baseline": best_baseline,
              "table1": {k: summary[k] for k in present_baselines + [v.name for v in variants]},
              "table4": {v.name: {**{k: summary[v.name][k] for k in ("mrr", "hr@10")},
                                  "train_seconds": [float(np.mean(train_time[v.name])),
                                                    float(np.std(train_time[v.name]))]} for v in t_variants},
              "bootstrap_95": comparisons}
    write_json(root / "experiment.json", report)
    write_text(root / "experiment.md", markdown_report(report))
    log("\n" + markdown_report(report))
    return report


def markdown_report(report: dict) -> str:
    n, seeds = report["n_test_pairs"], report["seeds"]
    lines = [f"#### Table 1 shape: test pairs ({n}), full ranking, mean ± std over {seeds} seeds", "",
             "| method | MRR | HR@10 | HR@50 |", "|---|---:|---:|---:|"]
    for name, m in report["table1"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m[k]) for k in TABLE_METRICS) + " |")
    lines += ["", f"#### Table 4 shape: neighbourhood size T (test pairs, {seeds} seeds)", "",
              "| T | MRR | HR@10 | training time (s) |", "|---|---:|---:|---:|"]
    for name, m in report["table4"].items():
        lines.append(f"| {name.split('=')[-1]} | {_fmt(m['mrr'])} | {_fmt(m['hr@10'])} | "
                     f"{m['train_seconds'][0]:.0f} ± {m['train_seconds'][1]:.0f} |")
    lines += ["", "#### Paired bootstrap (1,000 draws over test pairs): 95% interval of the difference", "",
              "| comparison | Δ MRR | Δ HR@10 |", "|---|---:|---:|"]
    for name, ci in report["bootstrap_95"].items():
        flag = "" if ci["mrr"][0] > 0 or ci["mrr"][1] < 0 else " (interval spans 0: noise)"
        lines.append(f"| {name}{flag} | [{ci['mrr'][0]:+.4f}, {ci['mrr'][1]:+.4f}] | "
                     f"[{ci['hr@10'][0]:+.4f}, {ci['hr@10'][1]:+.4f}] |")
    lines += ["", f"With one held-out pair per context there are only {n} test pairs: differences whose "
              "interval spans zero are noise, whatever the means say."]
    return "\n".join(lines) + "\n"
