"""End-to-end runs of the library chain on a small two-community dataset."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, make_community_dataset

from pinsage import pipeline
from pinsage.eval.stats import paired_bootstrap
from pinsage.graph.neighbors import Neighbors
from pinsage.run.config import PipelineConfig


def small_config(data, out, seed=0, epochs=3, workers=0) -> PipelineConfig:
    cfg = PipelineConfig(data=str(data), out=str(out), pixie_walks_per_item=200).with_seed(seed)
    cfg.features.word2vec_dim, cfg.features.word2vec_epochs = 16, 5
    cfg.walks.walks_per_item, cfg.walks.top_t = 60, 5
    cfg.model.hidden_dim, cfg.model.output_dim = 16, 8
    cfg.train.epochs, cfg.train.num_workers, cfg.train.device = epochs, workers, "cpu"
    cfg.train.warmup_steps = 5
    cfg.train.sampler = dataclasses.replace(cfg.train.sampler, batch_size=64, n_shared_negatives=20)
    return cfg


def test_run_all_writes_every_artifact_and_sensible_metrics(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=60, n_contexts=120)
    cfg = small_config(data, tmp_path / "out", workers=1)  # one real producer process
    pipeline.run_all(cfg, log=lambda s: None)
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {"pinsage", "popularity", "annotation", "combined", "pixie", "itemknn", "ease", "rp3beta"}
    assert set(metrics["methods"]) == expected
    assert set(metrics["validation"]["methods"]) == expected
    assert metrics["n_pairs"] == 120 and metrics["validation"]["n_pairs"] == 120
    for m in metrics["methods"].values():
        assert set(m) == {"mrr", "hr@10", "hr@50", "hr@100"} and 0 < m["mrr"] <= 1
    # 59 candidates: a random ranking has MRR ~ H(59)/59 ~ 0.08 and HR@10 = 10/59 ~ 0.17, close to what
    # a small model reaches on 120 pairs; so the check is against random rankings of the same pairs,
    # paired: PinSage's per-pair ranks must beat them with the interval above 0
    ranks = pd.read_parquet(out / "ranks.parquet")
    mine = ranks.loc[ranks["split"] == "test", "pinsage"].to_numpy(dtype=float)
    chance = np.random.default_rng(0).integers(1, 60, size=(5, len(mine))).astype(float)  # uniform rank of 59
    ci = paired_bootstrap([mine] * 5, list(chance), draws=500)
    assert ci["mrr"][0] > 0 and ci["hr@10"][0] > 0, ci
    assert metrics["methods"]["pinsage"]["hr@10"] > metrics["methods"]["popularity"]["hr@10"]
    assert (out / "metrics.md").read_text().count("| pinsage |") == 2
    shards = sorted((out / "embeddings").glob("part-*.parquet"))
    table = pq.read_table(shards[0])
    assert table.schema.field("embedding").type.list_size == 8
    assert table.column("item_id").type == "string"
    assert (out / "index" / "index.faiss").exists() and (out / "index" / "ids.parquet").exists()
    # the learned embeddings separate the two communities: nearest items share the community
    from pinsage.export.embeddings import read_embeddings
    _, emb = read_embeddings(out / "embeddings")
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :10]
    same = (top < 30) == (np.arange(60)[:, None] < 30)
    assert same.mean() > 0.9
    # the popularity prior: its weight chosen on validation is the one served, in every score
    from pinsage.export.embeddings import read_prior
    from pinsage.graph.bipartite import BipartiteGraph
    from pinsage.run.layout import RunDir
    from pinsage.serve.recommend import Catalogue
    from pinsage.validation import PRIOR_BETAS

    history = json.loads((out / "train" / "history.json").read_text())
    chosen, tried = history["prior"]["chosen"], history["prior"]["validation_mrr"]
    assert len(tried) == len(PRIOR_BETAS) and tried[f"{chosen:g}"] == max(tried.values())
    assert history["best_validation_mrr"] == tried[f"{chosen:g}"]
    degree = BipartiteGraph.load(RunDir(out).graph_file).item_degree()
    prior = read_prior(out / "embeddings")
    assert np.allclose(prior, chosen * np.log1p(degree), atol=1e-6)
    answer = Catalogue.from_run(out).related([f"i{k}" for k in range(5)], k=5)
    row = {item: k for k, item in enumerate(RunDir(out).item_ids())}
    for r in answer:
        q, i = row[r["query_item_id"]], row[r["item_id"]]
        assert r["score"] == pytest.approx(float(emb[q] @ emb[i] + prior[i]), abs=1e-5)
    # neighbourhoods stay inside each item's community
    nbrs = Neighbors.load(out / "neighbors" / "neighbors.parquet")
    for i in range(60):
        real = nbrs.items[i][nbrs.mask[i]]
        assert len(real) > 0 and np.all((real < 30) == (i < 30))


def test_training_resumes_from_checkpoint_to_the_same_result(tmp_path):
    data = make_community_dataset(tmp_path / "data")
    full = small_config(data, tmp_path / "full", epochs=3)
    pipeline.run_all(full, log=lambda s: None)
    # the interrupted run: stops after 2 epochs, then a retry with the full budget resumes
    part = small_config(data, tmp_path / "part", epochs=2)
    for stage in ("prepare", "graph", "features", "neighbors", "train"):
        pipeline.STAGES[stage](part, log=lambda s: None)
    logs = []
    pipeline.train(dataclasses.replace(part, train=dataclasses.replace(part.train, epochs=3)), log=logs.append)
    assert any("resumed" in line and "after epoch 2" in line for line in logs)
    a = torch.load(tmp_path / "full" / "train" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "train" / "model.pt", weights_only=True)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    hist_a = json.loads((tmp_path / "full" / "train" / "history.json").read_text())
    hist_b = json.loads((tmp_path / "part" / "train" / "history.json").read_text())
    assert [e["loss"] for e in hist_a["epochs"]] == pytest.approx([e["loss"] for e in hist_b["epochs"]])


def test_new_items_without_interactions_still_get_embeddings(tmp_path):
    data = make_community_dataset(tmp_path / "data", extra_items=4)
    cfg = small_config(data, tmp_path / "out", epochs=1)
    pipeline.run_all(cfg, log=lambda s: None)
    ids = np.concatenate([pq.read_table(p).column("item_id").to_numpy(zero_copy_only=False)
                          for p in sorted((tmp_path / "out" / "embeddings").glob("part-*.parquet"))])
    assert len(ids) == 64 and {"i60", "i63"} <= set(ids)


@pytest.mark.slow  # a whole process run end to end: the full suite has it
def test_cli_run_prints_the_metrics_table(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=40)
    proc = subprocess.run([sys.executable, "-m", "pinsage", "run", "--data", str(data), "--out",
                           str(tmp_path / "out"), "--epochs", "1", "--device", "cpu", "--hidden-dim", "16",
                           "--output-dim", "8", "--top-t", "5", "--walks-per-item", "30", "--workers", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| pinsage |" in proc.stdout and "MRR" in proc.stdout
    assert (tmp_path / "out" / "metrics.json").exists()


def test_cli_reports_bad_dataset_with_file_and_column(tmp_path):
    data = make_community_dataset(tmp_path / "data")
    text = (data / "interactions.csv").read_text().replace("context_id", "user", 1)
    (data / "interactions.csv").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "pinsage", "run", "--data", str(data), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "interactions.csv" in proc.stderr and "context_id" in proc.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_same_seed_in_separate_processes_gives_identical_metrics(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=40, n_contexts=40)
    results = []
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "-m", "pinsage", "run", "--data", str(data), "--out",
                               str(tmp_path / name), "--epochs", "2", "--device", "cpu", "--hidden-dim", "16",
                               "--output-dim", "8", "--top-t", "5", "--walks-per-item", "30", "--seed", "3"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert results[0] == results[1]


def test_cli_reports_a_bad_parameter_by_name_without_traceback(tmp_path):
    data = make_community_dataset(tmp_path / "data")
    proc = subprocess.run([sys.executable, "-m", "pinsage", "run", "--data", str(data), "--out",
                           str(tmp_path / "out"), "--epochs", "-1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and ">= 1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
