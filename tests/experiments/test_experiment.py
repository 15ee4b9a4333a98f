import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import make_community_dataset
from test_pipeline import small_config

from pinsage.eval.stats import aggregate, paired_bootstrap
from pinsage.experiments.runner import FEATURES_ONLY, FEATURES_ONLY_K0, Variant, run_experiment
from pinsage.graph.bipartite import BipartiteGraph


def test_aggregate_takes_mean_and_std_over_seeds():
    per_seed = [{"a": {"mrr": 0.1, "hr@10": 0.2}, "v": {"mrr": 1.0, "hr@10": 1.0}},
                {"a": {"mrr": 0.3, "hr@10": 0.4}},
                {"a": {"mrr": 0.2, "hr@10": 0.9}}]
    out = aggregate(per_seed)
    assert out["a"]["mrr"] == pytest.approx([0.2, np.std([0.1, 0.3, 0.2])])
    assert out["a"]["hr@10"] == pytest.approx([0.5, np.std([0.2, 0.4, 0.9])])
    assert out["v"]["mrr"] == pytest.approx([1.0, 0.0])  # only the seed that has it


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    base = rng.integers(1, 200, size=600).astype(float)
    same = paired_bootstrap([base], [base.copy()], draws=200)
    assert same["mrr"] == [0.0, 0.0] and same["hr@10"] == [0.0, 0.0]
    better = np.maximum(1.0, base / 4)  # every target ranked 4x higher
    ci = paired_bootstrap([better, better], [base, base], draws=200)
    assert ci["mrr"][0] > 0 and ci["hr@10"][0] > 0
    worse = paired_bootstrap([base], [better], draws=200)
    assert worse["mrr"][1] < 0


def _correlated_ranks(rng, n):
    """Method b's ranks, and a's: the same pairs, each moved by a few places (strongly correlated)."""
    b = rng.integers(1, 30, size=n).astype(float)
    a = np.maximum(1.0, b + rng.integers(-3, 2, size=n))
    return a, b


def test_paired_bootstrap_matches_the_analytic_interval_and_pairing_narrows_it():
    rng = np.random.default_rng(1)
    a, b = _correlated_ranks(rng, 2000)
    d = 1 / a - 1 / b
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # the normal interval of a mean of 2,000 differences
    lo, hi = paired_bootstrap([a], [b], draws=2000)["mrr"]
    assert (hi - lo) == pytest.approx(2 * half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(d.mean(), abs=0.1 * half)
    # unpaired, the two methods' own spreads add up: pairing cancels the pair-to-pair variation
    unpaired = 1.96 * np.sqrt((1 / a).var(ddof=1) / len(a) + (1 / b).var(ddof=1) / len(b))
    assert hi - lo < 0.5 * 2 * unpaired


def test_paired_bootstrap_covers_the_true_difference_95_times_in_100():
    rng = np.random.default_rng(2)
    a, b = _correlated_ranks(rng, 1_000_000)
    truth = np.mean(1 / a - 1 / b)  # the population's mean difference (to ~1e-4 of its spread)
    covered = []
    for k in range(200):
        a, b = _correlated_ranks(rng, 300)
        lo, hi = paired_bootstrap([a], [b], draws=400, seed=k)["mrr"]
        covered.append(lo <= truth <= hi)
    assert 0.90 <= np.mean(covered) <= 0.99, np.mean(covered)  # 95% +- 2.2 binomial standard errors


@pytest.mark.slow
def test_experiment_runs_variants_over_seeds(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=60)
    cfg = small_config(data, tmp_path / "exp", epochs=1)
    variants = (Variant.of("no convolution (K=0)", model__n_layers=0), Variant("pinsage"))
    # one seed trained on its own (a process per seed, side by side), then the whole experiment
    assert run_experiment(cfg, seeds=2, log=lambda s: None, t_values=(5,), variants=variants,
                          only_seeds=(1,)) == {"seeds_done": [1]}
    assert not (tmp_path / "exp" / "experiment.json").exists()
    first = []
    report = run_experiment(dataclasses.replace(cfg, cpus=1), seeds=2, log=first.append, t_values=(5,),
                            variants=variants, draws=50)
    assert sum("already done" in line for line in first) == 2  # seed 1's variants; cpus changes nothing trained
    assert report["seeds"] == 2
    assert {"popularity", "itemknn", "pixie", "no convolution (K=0)", "pinsage"} <= set(report["table1"])
    assert set(report["table4"]) == {"pinsage T=5"}
    per_seed = [json.loads((tmp_path / "exp" / f"seed{s}" / "variants" / "pinsage" / "metrics.json").read_text())
                ["methods"]["pinsage"]["mrr"] for s in range(2)]
    assert report["table1"]["pinsage"]["mrr"][0] == pytest.approx(np.mean(per_seed))
    assert "pinsage vs itemknn" in report["bootstrap_95"]
    # sparse targets (<= 5 training interactions), counted from the seeds' own graphs and test pairs
    sparse = []
    for s in range(2):
        degree = BipartiteGraph.load(tmp_path / "exp" / f"seed{s}" / "graph" / "graph.npz").item_degree()
        test = pq.read_table(tmp_path / "exp" / f"seed{s}" / "prepare" / "test.parquet").to_pandas()
        sparse.append(int((degree[test["target"].to_numpy()] <= 5).sum()))
    assert report["n_sparse_test_pairs"] == np.mean(sparse)
    assert ("pinsage vs no convolution (K=0)" in report["bootstrap_95_sparse"]) == all(sparse)
    md = (tmp_path / "exp" / "experiment.md").read_text()
    assert "Table 1" in md and "Table 4" in md and "| pinsage |" in md
    # a second call trains nothing (every variant is recorded as done) and reproduces the report
    model = tmp_path / "exp" / "seed0" / "variants" / "pinsage" / "train" / "model.pt"
    stamp = model.stat().st_mtime_ns
    logs = []
    again = run_experiment(cfg, seeds=2, log=logs.append, t_values=(5,), variants=variants, draws=50)
    assert model.stat().st_mtime_ns == stamp
    # 2 seeds x 2 variants; the T=5 row is the configured T, so it reuses the pinsage row's training
    assert sum("already done" in line for line in logs) == 2 * 2
    assert report["table4"]["pinsage T=5"]["mrr"] == report["table1"]["pinsage"]["mrr"]
    assert again["table1"] == report["table1"]
    assert again["table4"]["pinsage T=5"]["mrr"] == report["table4"]["pinsage T=5"]["mrr"]


def _report(pinsage_mrr, pinsage_hr, knn_ci_lo, k0_ci_lo, sparse_ci_lo=0.001, valid=(0.04, 0.039)):
    return {"best_baseline": "itemknn", "baselines": ["itemknn", "popularity"],
            "table1": {"itemknn": {"mrr": [0.030, 0.0], "hr@10": [0.050, 0.0]},
                       "popularity": {"mrr": [0.020, 0.0], "hr@10": [0.060, 0.0]},
                       "pinsage": {"mrr": pinsage_mrr, "hr@10": pinsage_hr, "valid_mrr": [valid[0], 0.0]},
                       "no convolution (K=0)": {"mrr": [0.03, 0.0], "hr@10": [0.06, 0.0],
                                                "valid_mrr": [valid[1], 0.0]}},
            "bootstrap_95": {"pinsage vs itemknn": {"mrr": [knn_ci_lo, 0.01], "hr@10": [0.0, 0.1]},
                             "pinsage vs no convolution (K=0)": {"mrr": [k0_ci_lo, 0.01], "hr@10": [0.0, 0.1]}},
            "bootstrap_95_sparse": {"pinsage vs no convolution (K=0)": {"mrr": [sparse_ci_lo, 0.01],
                                                                        "hr@10": [0.0, 0.1]}}}


def test_quality_bar_checks_ratio_bootstrap_validation_and_sparse_targets():
    from pinsage.experiments.runner import quality_bar

    good = quality_bar(_report([0.035, 0.001], [0.070, 0.002], 0.001, 0.0005))
    assert good["beats_baselines"] and good["beats_ablation"] and good["beats_ablation_sparse"]
    assert good["ablation_on_validation"]
    assert good["hr@10"]["best_baseline"] == "popularity"  # best per metric, not the best-MRR method
    assert good["mrr"]["ratio"] == pytest.approx(0.035 / 0.030)
    assert not quality_bar(_report([0.034, 0.001], [0.070, 0.002], 0.001, 0.0))["beats_baselines"]  # < 1.15x
    assert not quality_bar(_report([0.035, 0.001], [0.070, 0.002], -0.001, 0.0))["beats_baselines"]  # noise
    assert not quality_bar(_report([0.035, 0.001], [0.068, 0.002], 0.001, 0.0))["beats_baselines"]  # HR@10
    assert not quality_bar(_report([0.035, 0.001], [0.070, 0.002], 0.001, -0.001))["beats_ablation"]
    sparse = quality_bar(_report([0.035, 0.001], [0.070, 0.002], 0.001, -0.001, sparse_ci_lo=-0.0001))
    assert not sparse["beats_ablation_sparse"]
    assert not quality_bar(_report([0.035, 0.001], [0.070, 0.002], 0.001, 0.0, valid=(0.038, 0.039)))[
        "ablation_on_validation"]
    # the features-only pair is judged on its own interval, beside the default model's
    report = _report([0.035, 0.001], [0.070, 0.002], 0.001, 0.0005)
    report["bootstrap_95"][f"{FEATURES_ONLY} vs {FEATURES_ONLY_K0}"] = {"mrr": [-0.002, 0.01], "hr@10": [0.0, 0.1]}
    assert quality_bar(report)["other_ablations"] == {f"{FEATURES_ONLY} vs {FEATURES_ONLY_K0}": False}
    report["bootstrap_95"][f"{FEATURES_ONLY} vs {FEATURES_ONLY_K0}"]["mrr"][0] = 0.001
    assert quality_bar(report)["other_ablations"] == {f"{FEATURES_ONLY} vs {FEATURES_ONLY_K0}": True}


def test_by_target_degree_buckets_ranks():
    from pinsage.eval.stats import by_target_degree

    degree = [np.array([0, 3, 3, 50]), np.array([0, 2, 10, 30])]
    ranks = {"m": [np.array([4.0, 1.0, 2.0, 10.0]), np.array([2.0, 1.0, 5.0, 5.0])]}
    out = by_target_degree(ranks, degree)
    assert out["buckets"] == {"0": 1.0, "1-5": 1.5, "6-20": 0.5, ">20": 1.0}
    assert out["mrr"]["m"]["0"] == pytest.approx((0.25 + 0.5) / 2)
    assert out["mrr"]["m"]["1-5"] == pytest.approx((0.75 + 1.0) / 2)
    assert out["mrr"]["m"]["6-20"] is None  # empty in seed 0: no mean over a missing bucket
    assert out["mrr"]["m"][">20"] == pytest.approx((0.1 + 0.2) / 2)


def test_variant_settings_apply_to_a_copy_and_refuse_unknown_keys(tmp_path):
    cfg = small_config(tmp_path / "data", tmp_path / "out")
    changed = Variant.of("x", model__n_layers=0, walks__top_t=3).apply(cfg)
    assert (changed.model.n_layers, changed.walks.top_t) == (0, 3)
    assert cfg.model.n_layers != 0 and cfg.walks.top_t != 3  # the base config is untouched
    assert Variant.of("x", walks__top_t=7).changes_neighbors
    assert not Variant.of("x", model__n_layers=0).changes_neighbors
    with pytest.raises(ValueError, match="no setting 'model.n_layerz'"):
        Variant.of("x", model__n_layerz=1).apply(cfg)


# ---------------------------------------------------------------------------------------------
# "Best baseline" is best on validation MRR, everywhere (pinsage.eval.selection)

# itemknn is the best baseline on test, ease on validation: every caller must pick ease
VALID_MRR = {"pinsage": 0.05, "popularity": 0.01, "itemknn": 0.02, "ease": 0.04}
TEST_MRR = {"pinsage": 0.05, "popularity": 0.01, "itemknn": 0.06, "ease": 0.03}


def _metrics(model_mrr: float | None = None) -> dict:
    test = {m: {"mrr": v, "hr@10": v, "hr@50": v} for m, v in TEST_MRR.items()}
    valid = {m: {"mrr": v, "hr@10": v, "hr@50": v} for m, v in VALID_MRR.items()}
    if model_mrr is not None:
        test["pinsage"]["mrr"] = valid["pinsage"]["mrr"] = model_mrr
    return {"n_pairs": 40, "methods": test, "validation": {"n_pairs": 40, "methods": valid}}


def test_best_baseline_is_chosen_on_validation():
    from pinsage.eval.selection import baseline_methods, best_baseline, run_best_baseline

    assert best_baseline(VALID_MRR) == "ease" and best_baseline(TEST_MRR) == "itemknn"
    assert best_baseline({"pinsage": 0.1}) is None
    assert best_baseline({"a": 0.1, "b": 0.1}) == "a"  # ties: the first
    assert best_baseline({"a": float("nan"), "b": 0.0}) == "b"
    assert baseline_methods(["pinsage", "popularity", "K=0", "ease"], exclude=("pinsage", "K=0")) == \
        ["popularity", "ease"]
    assert run_best_baseline(_metrics()) == "ease"
    assert run_best_baseline({"methods": _metrics()["methods"]}) is None  # no validation figures: no choice


def test_report_and_version_description_name_the_validation_best(tmp_path):
    from pinsage.report import _comparison_sentence
    from pinsage.run.layout import RunDir
    from tasks.mlflow_ui import version_description

    rng = np.random.default_rng(0)
    ranks = pd.DataFrame({"split": "test", "query": np.arange(40), "target": np.arange(40) + 1,
                          **{m: rng.integers(1, 100, 40).astype(float) for m in TEST_MRR}})
    ranks.to_parquet(tmp_path / "ranks.parquet", index=False)
    sentence = _comparison_sentence(RunDir(tmp_path), _metrics())
    assert sentence.startswith('<p class="bootstrap">PinSage vs ease on 40 test pairs')
    assert "ease is the best baseline by validation MRR" in sentence
    text = version_description(promoted=True, reason="first", metrics=_metrics(), ref={"dag_id": "d", "run_key": "k"},
                               commit="c", report_uri=None)
    assert "| best baseline (ease) | 0.0400 | 0.0300 |" in text


def test_experiment_compares_against_the_validation_best(tmp_path, monkeypatch):
    """run_experiment over fabricated runs (no training): the best baseline, and with it the bootstrap
    rows and the bar's interval, come from the mean validation MRR over seeds."""
    from pinsage import pipeline
    from pinsage.experiments import runner
    from pinsage.graph.bipartite import build_graph
    from pinsage.run.config import PipelineConfig
    from pinsage.run.layout import RunDir

    def graph_stage(cfg, log=None):
        run = RunDir(cfg.out)
        run.graph.mkdir(parents=True, exist_ok=True)
        build_graph(np.arange(41) % 41, np.zeros(41, int), 41, 1).save(run.graph_file)
        return {}

    for stage in ("prepare", "features", "neighbors"):
        monkeypatch.setitem(pipeline.STAGES, stage, lambda cfg, log=None: {})
    monkeypatch.setitem(pipeline.STAGES, "graph", graph_stage)

    def fake_variant(cfg, variant, log):
        out = Path(cfg.out) / variant.name.replace(" ", "_")
        out.mkdir(parents=True, exist_ok=True)
        model = 0.07 if variant.name == "pinsage" else 0.035
        (out / "metrics.json").write_text(json.dumps(_metrics(model)))
        rng = np.random.default_rng(len(variant.name))
        pd.DataFrame({"split": "test", "query": np.arange(40), "target": np.arange(40) + 1,
                      **{m: rng.integers(1, 60, 40).astype(float) for m in TEST_MRR}}).to_parquet(
            out / "ranks.parquet", index=False)
        return {"out": str(out), "train_seconds": 1.0}

    monkeypatch.setattr(runner, "run_variant", fake_variant)
    cfg = PipelineConfig(data=str(tmp_path / "data"), out=str(tmp_path / "exp"))
    variants = (Variant.of("no convolution (K=0)", model__n_layers=0), Variant("pinsage"))
    report = run_experiment(cfg, seeds=2, log=lambda s: None, t_values=(), variants=variants, draws=20)
    assert report["baselines"] == ["popularity", "itemknn", "ease"]  # every method but the variants
    assert report["table1"]["itemknn"]["mrr"][0] > report["table1"]["ease"]["mrr"][0]  # best on test ...
    assert report["best_baseline"] == "ease"  # ... but ease on validation is the one compared against
    assert "no convolution (K=0) vs ease" in report["bootstrap_95"]
    assert "no convolution (K=0) vs itemknn" not in report["bootstrap_95"]
    assert report["bar"]["best_baseline"] == "ease"
    md = (tmp_path / "exp" / "experiment.md").read_text()
    assert "best baseline (best mean validation MRR; the bootstrap rows compare against it): ease" in md


@pytest.mark.slow
def test_the_new_items_experiment_trains_without_them_and_compares_on_their_pairs(tmp_path):
    from pinsage.experiments.newitems import FEATURES_K0, run_new_items_experiment
    from pinsage.run.layout import RunDir

    data = make_community_dataset(tmp_path / "data", n_items=60, n_contexts=120)
    cfg = small_config(data, tmp_path / "exp", epochs=2)
    report = run_new_items_experiment(cfg, seeds=1, log=lambda s: None, revealed=(0, 3), draws=100)
    saved = json.loads((tmp_path / "exp" / "new_items.json").read_text())
    assert {(c["direction"], c["revealed"]) for c in saved["cases"]} == {
        (d, r) for d in ("to-new", "from-new") for r in (0, 3)}
    trained = set(RunDir(tmp_path / "exp" / "seed0" / "pinsage").item_ids().astype(str))
    assert len(trained) == 54  # 10% of the 60 items with interactions are held back, model and all
    for rep in report["cases"]:
        c, r = rep["counts"], rep["revealed"]
        assert c["new_items"] == 6 and c["items"] == 60 and c["revealed_interactions"] == 6 * r
        assert c["test_pairs"] > 0 and c["valid_pairs"] > 0
        table = rep["table"]
        assert {"pinsage", FEATURES_K0, "annotation", "combined", "popularity", "pixie", "itemknn", "ease",
                "rp3beta"} <= set(table)
        # the best baseline is the one best on validation, and the ratio is on test
        others = {m: t["valid_mrr"][0] for m, t in table.items() if m not in ("pinsage", FEATURES_K0)}
        assert rep["best_other"] == max(others, key=others.get)
        assert rep["ratio"] == pytest.approx(table["pinsage"]["mrr"][0] / table[rep["best_other"]]["mrr"][0])
        lo, hi = rep["bootstrap_95"][f"pinsage vs {rep['best_other']}"]["mrr"]
        assert lo <= table["pinsage"]["mrr"][0] - table[rep["best_other"]]["mrr"][0] <= hi
        assert rep["bar"]["interval_above_zero"] == (lo > 0)
        assert rep["bar"]["ratio_needed"] == {("to-new", 0): 1.1, ("to-new", 3): 1.3, ("from-new", 3): 1.2}.get(
            (rep["direction"], r))
    # per-seed results are kept: a second call renders from them without training or cold-starting again
    again = run_new_items_experiment(cfg, seeds=1, log=lambda s: None, revealed=(0, 3), draws=100)
    assert [c["table"]["pinsage"]["mrr"] for c in again["cases"]] == [c["table"]["pinsage"]["mrr"]
                                                                      for c in report["cases"]]
    assert run_new_items_experiment(cfg, seeds=1, log=lambda s: None, revealed=(0, 3), only_seeds=(0,)) is None
    md = (tmp_path / "exp" / "new_items.md").read_text()
    assert md.count("#### new-items, to-new, r = ") == 2 and md.count("#### new-items, from-new, r = ") == 2
    assert "pinsage vs " in md
