import json

import numpy as np
import pytest

from pinsage.experiment import Variant, aggregate, paired_bootstrap, run_experiment

from conftest import make_community_dataset
from test_pipeline import small_config


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


def test_experiment_runs_variants_over_seeds(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=60)
    cfg = small_config(data, tmp_path / "exp", epochs=1)
    variants = (Variant("no convolution (K=0)", n_layers=0), Variant("pinsage"))
    report = run_experiment(cfg, seeds=2, log=lambda s: None, t_values=(5,), variants=variants, draws=50)
    assert report["seeds"] == 2
    assert {"popularity", "itemknn", "pixie", "no convolution (K=0)", "pinsage"} <= set(report["table1"])
    assert set(report["table4"]) == {"pinsage T=5"}
    per_seed = [json.loads((tmp_path / "exp" / f"seed{s}" / "variants" / "pinsage" / "metrics.json").read_text())
                ["methods"]["pinsage"]["mrr"] for s in range(2)]
    assert report["table1"]["pinsage"]["mrr"][0] == pytest.approx(np.mean(per_seed))
    assert "pinsage vs itemknn" in report["bootstrap_95"]
    md = (tmp_path / "exp" / "experiment.md").read_text()
    assert "Table 1" in md and "Table 4" in md and "| pinsage |" in md
