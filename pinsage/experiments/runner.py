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

from pinsage import pipeline
from pinsage.eval.selection import MODEL, baseline_methods, best_baseline
from pinsage.eval.stats import SPARSE_DEGREE, aggregate, by_target_degree, paired_bootstrap
from pinsage.experiments.tables import markdown_report
from pinsage.graph.bipartite import BipartiteGraph
from pinsage.run.config import PipelineConfig
from pinsage.run.dotted import ParamError
from pinsage.run.layout import RunDir
from pinsage.util.io import write_json, write_text

Log = Callable[[str], None]


@dataclass(frozen=True)
class Variant:
    """A named change to the run's configuration: ``settings`` maps dotted PipelineConfig paths
    (``"model.n_layers"``, ``"walks.top_t"``) to values; everything else stays as configured."""

    name: str
    settings: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, name: str, **settings) -> "Variant":
        """``Variant.of("K=0", model__n_layers=0)``: double underscores stand for the dots."""
        return cls(name, tuple((k.replace("__", "."), v) for k, v in settings.items()))

    @property
    def changes_neighbors(self) -> bool:
        return any(path.startswith("walks.") for path, _ in self.settings)

    def apply(self, cfg: PipelineConfig) -> PipelineConfig:
        """A copy of ``cfg`` with this variant's settings (unknown keys refused)."""
        try:
            return cfg.replace(dict(self.settings))
        except ParamError as err:
            raise ValueError(f"variant {self.name!r}: no setting {err.param!r}") from None


FEATURES_ONLY = "pinsage, features only (paper inputs)"
FEATURES_ONLY_K0 = "no convolution (K=0), features only"

# Paper Table 1 ablations: the same inputs, id embeddings, loss and positives throughout; each row
# changes one thing against the last (``pinsage``, every default), except the K=0 ablation of the
# features-only model, which changes two: the paper's claim is checked for both input sets.
TABLE1_VARIANTS = (
    Variant.of("no convolution (K=0)", model__n_layers=0),
    Variant.of("mean pooling", model__aggregator="mean", train__sampler__hard_negatives=False),
    Variant.of("mean pooling + hard negatives", model__aggregator="mean", train__sampler__hard_negatives=True),
    Variant.of("pinsage, max-margin loss (paper)", train__loss="max_margin"),
    Variant.of("pinsage, final layers without h^0 (paper)", model__input_skip=False),
    Variant.of("pinsage, temperature 0.1", train__temperature=0.1),
    Variant.of("pinsage without the popularity prior", model__popularity_prior=False),
    Variant.of(FEATURES_ONLY_K0, model__id_embedding=False, model__n_layers=0),
    Variant.of(FEATURES_ONLY, model__id_embedding=False),
    Variant("pinsage"),
)


def table1_rows(names: str | None) -> tuple[Variant, ...]:
    """The Table 1 rows named in ``names`` (';'-separated; None: all), in the table's order."""
    if names is None:
        return TABLE1_VARIANTS
    wanted = [n.strip() for n in names.split(";") if n.strip()]
    known = {v.name for v in TABLE1_VARIANTS}
    unknown = [n for n in wanted if n not in known]
    if unknown or "pinsage" not in wanted:
        raise ValueError(f"--rows: unknown {unknown} or no 'pinsage' row; the rows: {sorted(known)}")
    return tuple(v for v in TABLE1_VARIANTS if v.name in wanted)


# (model, its K=0 ablation with the same inputs): each pair gets a bootstrap comparison and a bar line
ABLATION_PAIRS = (("pinsage", "no convolution (K=0)"), (FEATURES_ONLY, FEATURES_ONLY_K0))
TABLE4_T = (10, 20, 50)


def _link_shared(base: Path, out: Path, stages: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        link = out / stage
        if not link.exists():
            os.symlink((base / stage).resolve(), link, target_is_directory=True)


def _model_settings(config: dict) -> dict:
    """A variant's recorded config without how it ran (``cpus``): those do not change what it trains."""
    return {k: v for k, v in config.items() if k != "cpus"}


def run_variant(base_cfg: PipelineConfig, variant: Variant, log: Log) -> dict:
    """Train, export and evaluate one variant over the base run's shared stages.

    A variant whose ``variant.json`` records the same configuration is not trained again, so an
    interrupted experiment resumes where it stopped and a finished one re-renders its report at once.
    """
    out = Path(base_cfg.out) / "variants" / variant.name.replace(" ", "_").replace("/", "_")
    cfg = dataclasses.replace(variant.apply(base_cfg), out=str(out))
    done = out / "variant.json"
    if done.exists() and RunDir(out).ranks.exists():
        record = json.loads(done.read_text())
        if _model_settings(record["config"]) == _model_settings(json.loads(json.dumps(cfg.to_dict()))):
            log(f"experiment: {variant.name} already done in {out}")
            return {"out": str(out), "train_seconds": record["train_seconds"]}
    shared = ("dataset", "prepare", "graph", "features") + (() if variant.changes_neighbors else ("neighbors",))
    _link_shared(Path(base_cfg.out), out, tuple(s for s in shared if (Path(base_cfg.out) / s).exists()))
    if variant.changes_neighbors:
        pipeline.neighbors(cfg, log=log)
    t0 = time.perf_counter()
    pipeline.train(cfg, log=log)
    train_seconds = time.perf_counter() - t0
    for stage in (pipeline.export, pipeline.evaluate):
        stage(cfg, log=lambda s: None)
    write_json(RunDir(out).config, cfg.to_dict())  # a run directory like any other (cold start reads it)
    write_json(done, {"config": cfg.to_dict(), "train_seconds": train_seconds})
    return {"out": str(out), "train_seconds": train_seconds}


def run_experiment(cfg: PipelineConfig, seeds: int, log: Log = print, t_values=TABLE4_T,
                   variants=TABLE1_VARIANTS, draws: int = 1000, only_seeds: tuple[int, ...] | None = None) -> dict:
    """Run every variant for ``seeds`` seeds; write experiment.json and experiment.md under cfg.out.

    ``only_seeds``: train just those seed indices (e.g. one process or machine per seed, each with
    ``cpus`` set to its share) and write no report; a later call without it finds them done.
    """
    root = Path(cfg.out)
    t_variants = tuple(Variant.of(f"pinsage T={t}", walks__top_t=t) for t in t_values)
    test_metrics: list[dict] = []
    valid_metrics: list[dict] = []  # settings are chosen on these; shown beside the test figures
    test_ranks: dict[str, list[np.ndarray]] = {}
    train_time: dict[str, list[float]] = {}
    n_pairs = []
    target_degree: list[np.ndarray] = []  # per seed, (P,) training degree of each test target
    for s in range(seeds):
        if only_seeds is not None and s not in only_seeds:
            continue
        seed_cfg = dataclasses.replace(cfg.with_seed(cfg.seed + s), out=str(root / f"seed{s}"))
        log(f"experiment: seed {seed_cfg.seed}")
        for stage in ("prepare", "graph", "features", "neighbors"):
            pipeline.STAGES[stage](seed_cfg, log=log)
        degree = BipartiteGraph.load(RunDir(seed_cfg.out).graph_file).item_degree()
        metrics: dict[str, dict] = {}
        valid: dict[str, dict] = {}
        outputs: dict[str, dict] = {}
        for variant in variants + t_variants:
            same = [v.name for v in variants if v.name in outputs and
                    v.apply(seed_cfg).to_dict() == variant.apply(seed_cfg).to_dict()]
            # a Table 4 row at the configured T is the ``pinsage`` row: trained once, reported twice
            info = outputs[same[0]] if same else run_variant(seed_cfg, variant, log)
            outputs[variant.name] = info
            run = RunDir(info["out"])
            m, ranks = run.read_json(run.metrics), run.ranks_table("test")
            metrics[variant.name] = m["methods"]["pinsage"]
            valid[variant.name] = m["validation"]["methods"]["pinsage"]
            test_ranks.setdefault(variant.name, []).append(ranks["pinsage"].to_numpy())
            train_time.setdefault(variant.name, []).append(info["train_seconds"])
            if len(target_degree) == s:
                target_degree.append(degree[ranks["target"].to_numpy()])
            for b in baseline_methods(m["methods"], exclude=(MODEL,)):  # every method but the run's model;
                if b not in metrics:  # baselines do not depend on the variant: take them once per seed
                    metrics[b] = m["methods"][b]
                    valid[b] = m["validation"]["methods"][b]
                    test_ranks.setdefault(b, []).append(ranks[b].to_numpy())
            n_pairs.append(m["n_pairs"])
        test_metrics.append(metrics)
        valid_metrics.append(valid)
    if only_seeds is not None:
        return {"seeds_done": sorted(only_seeds)}
    summary, valid_summary = aggregate(test_metrics), aggregate(valid_metrics)
    variant_names = {v.name for v in variants + t_variants}
    seen = dict.fromkeys(m for run in test_metrics for m in run)  # first-seen order: metrics.json's
    present_baselines = baseline_methods(seen, exclude=variant_names)
    # the project's one rule (pinsage.eval.selection): best mean validation MRR over the seeds
    best = best_baseline({b: valid_summary[b]["mrr"][0] for b in present_baselines}, exclude=variant_names)
    comparisons = {}
    for name in [v.name for v in variants]:
        for other in present_baselines + [v.name for v in variants if v.name != name]:
            if name == "pinsage" or other == best or (name, other) in ABLATION_PAIRS:
                comparisons[f"{name} vs {other}"] = paired_bootstrap(test_ranks[name], test_ranks[other], draws)
    report = {"seeds": seeds, "n_test_pairs": n_pairs[0], "best_baseline": best, "baselines": present_baselines,
              "table1": {k: {**summary[k], "valid_mrr": valid_summary[k]["mrr"]}
                         for k in present_baselines + [v.name for v in variants]},
              "table4": {v.name: {**{k: summary[v.name][k] for k in ("mrr", "hr@10")},
                                  "valid_mrr": valid_summary[v.name]["mrr"],
                                  "train_seconds": [float(np.mean(train_time[v.name])),
                                                    float(np.std(train_time[v.name]))]} for v in t_variants},
              "bootstrap_95": comparisons}
    report["by_target_degree"] = by_target_degree(
        {k: test_ranks[k] for k in present_baselines + [v.name for v in variants]}, target_degree)
    sparse = [d <= SPARSE_DEGREE for d in target_degree]  # (P,) per seed: targets with few interactions
    report["bootstrap_95_sparse"] = {
        f"{m} vs {a}": paired_bootstrap([r[k] for r, k in zip(test_ranks[m], sparse)],
                                        [r[k] for r, k in zip(test_ranks[a], sparse)], draws)
        for m, a in ABLATION_PAIRS + tuple((v.name, best) for v in variants if v.name == "pinsage")
        if m in test_ranks and a in test_ranks and all(k.any() for k in sparse)}
    report["n_sparse_test_pairs"] = float(np.mean([k.sum() for k in sparse]))
    report["bar"] = quality_bar(report)
    write_json(root / "experiment.json", report)
    write_text(root / "experiment.md", markdown_report(report))
    log("\n" + markdown_report(report))
    return report


BAR_RATIO = 1.15  # the quality bar: test MRR and HR@10 at least this multiple of the best baseline's


def quality_bar(report: dict, model: str = "pinsage", ablation: str = "no convolution (K=0)") -> dict:
    """The quality bar: whether the model beats the best baseline and its K=0 ablation, checked on the
    report's own figures.

    ``beats_baselines``: the model's mean test MRR and HR@10 are >= ``BAR_RATIO`` x the best
    baseline's (best per metric on test: every baseline is beaten by that ratio) and the bootstrap
    interval of the MRR difference against the best baseline (``report["best_baseline"]``: best mean
    validation MRR, :mod:`pinsage.eval.selection`) lies above zero. ``ablation_on_validation``: its
    mean validation MRR is at least its K=0 ablation's. ``beats_ablation_sparse``: the interval of
    Δ MRR against the ablation on sparse targets (<= ``SPARSE_DEGREE`` training interactions) lies
    above zero; ``beats_ablation``: the same over every test pair (the paper's claim in full).
    """
    t1 = report["table1"]
    if model not in t1:
        return {}
    baselines = report.get("baselines") or baseline_methods(
        t1, exclude={v.name for v in TABLE1_VARIANTS} | {model, ablation})
    out: dict = {"best_baseline": report["best_baseline"], "ratio_needed": BAR_RATIO}
    ok = True
    for metric in ("mrr", "hr@10"):
        best = max(baselines, key=lambda b: t1[b][metric][0])
        ratio = t1[model][metric][0] / max(t1[best][metric][0], 1e-12)
        out[metric] = {"best_baseline": best, "ratio": ratio}
        ok &= ratio >= BAR_RATIO
    ci = report["bootstrap_95"].get(f"{model} vs {report['best_baseline']}")
    out["beats_baselines"] = bool(ok and ci is not None and ci["mrr"][0] > 0)
    if ablation in t1 and "valid_mrr" in t1[model]:
        out["ablation_on_validation"] = bool(t1[model]["valid_mrr"][0] >= t1[ablation]["valid_mrr"][0])
    ci_sparse = report.get("bootstrap_95_sparse", {}).get(f"{model} vs {ablation}")
    out["beats_ablation_sparse"] = bool(ci_sparse is not None and ci_sparse["mrr"][0] > 0)
    ci0 = report["bootstrap_95"].get(f"{model} vs {ablation}")
    out["beats_ablation"] = bool(ci0 is not None and ci0["mrr"][0] > 0)
    out["other_ablations"] = {f"{m} vs {a}": bool(report["bootstrap_95"][f"{m} vs {a}"]["mrr"][0] > 0)
                              for m, a in ABLATION_PAIRS if (m, a) != (model, ablation)
                              and f"{m} vs {a}" in report["bootstrap_95"]}
    return out


