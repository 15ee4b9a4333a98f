"""Cold start: items added after training get embeddings and index entries without retraining."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pinsage import pipeline
from pinsage.export.embeddings import read_embeddings
from pinsage.serve.coldstart import embed_new_items
from pinsage.serve.recommend import Catalogue
from pinsage.util.io import write_json

from .conftest import ROOT, subprocess_env

WORDS = [("red", "ruby", "cherry", "fire"), ("green", "leaf", "forest", "moss"),
         ("blue", "ocean", "sky", "wave"), ("gold", "sun", "honey", "sand")]
PER, N_CONTEXTS = 20, 160  # 4 communities of 20 items; each context engages one community


def _items(ids, communities, rng) -> pd.DataFrame:
    """Three of the community's four words (shared vocabulary inside a community) and a noise word."""
    return pd.DataFrame({"item_id": ids, "title": [f"{WORDS[c][0]} thing {i}" for i, c in zip(ids, communities)],
                         "text": [" ".join(rng.choice(WORDS[c], 3, replace=False)) + f" x{rng.integers(10)}"
                                  for c in communities]})


def community(item_id: str) -> int:
    return int(item_id[1]) if item_id.startswith("c") else int(item_id[3])  # "c2_7" / "new2_1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained run on 4 communities, and the same data with 16 new items added."""
    root = tmp_path_factory.mktemp("coldstart")
    rng = np.random.default_rng(0)
    ids = [f"c{c}_{k}" for c in range(4) for k in range(PER)]
    rows = [{"context_id": f"u{u}", "item_id": f"c{u % 4}_{k}", "timestamp": 1_000_000 + 10 * u + t}
            for u in range(N_CONTEXTS) for t, k in enumerate(rng.choice(PER, 6, replace=False))]
    data = root / "data"
    data.mkdir()
    _items(ids, [c for c in range(4) for _ in range(PER)], rng).to_csv(data / "items.csv", index=False)
    pd.DataFrame(rows).to_csv(data / "interactions.csv", index=False)

    # 4 new items per community: _0 and _1 with 3 interactions in contexts of their community, _2 and
    # _3 with features only
    new_ids = [f"new{c}_{j}" for c in range(4) for j in range(4)]
    extra = [{"context_id": f"u{u}", "item_id": i, "timestamp": 2_000_000 + u}
             for i in new_ids if int(i[-1]) < 2
             for u in rng.choice(np.arange(community(i), N_CONTEXTS, 4), 3, replace=False)]
    grown = root / "grown"
    grown.mkdir()
    pd.concat([pd.read_csv(data / "items.csv"), _items(new_ids, [community(i) for i in new_ids], rng)]) \
        .to_csv(grown / "items.csv", index=False)
    pd.concat([pd.DataFrame(rows), pd.DataFrame(extra)]).to_csv(grown / "interactions.csv", index=False)

    cfg = pipeline.PipelineConfig(data=str(data), out=str(root / "run"), pixie_walks_per_item=100).with_seed(0)
    cfg.features.word2vec_dim, cfg.features.word2vec_epochs = 16, 20
    cfg.walks.walks_per_item, cfg.walks.top_t = 60, 5
    cfg.model.hidden_dim, cfg.model.output_dim = 16, 8
    cfg.train.epochs, cfg.train.num_workers, cfg.train.device, cfg.train.warmup_steps = 4, 0, "cpu", 5
    cfg.train.sampler = dataclasses.replace(cfg.train.sampler, batch_size=64, n_shared_negatives=20)
    write_json(root / "run" / "config.json", cfg.to_dict())
    for stage in ("prepare", "graph", "features", "neighbors", "train", "export", "index"):
        pipeline.STAGES[stage](cfg, log=lambda s: None)
    return {"root": root, "run": root / "run", "grown": grown, "new_ids": new_ids}


def test_new_items_are_embedded_without_retraining_or_moving_an_existing_item(trained):
    run, out = trained["run"], trained["root"] / "cold"
    weights_before = (run / "train" / "model.pt").read_bytes()
    result = embed_new_items(run, trained["grown"], out, log=lambda s: None)
    assert result["n_new"] == 16 and result["n_old"] == 80
    assert result["new_with_interactions"] == 8 and result["new_with_engaged_neighbours"] == 8
    assert sorted(result["new_item_ids"]) == sorted(trained["new_ids"])
    # the trained run is untouched and the existing items keep exactly their embeddings
    assert (run / "train" / "model.pt").read_bytes() == weights_before
    assert result["max_abs_change_existing"] == pytest.approx(0.0, abs=1e-6)
    ids, emb = read_embeddings(out / "embeddings")
    assert len(ids) == 96 and set(trained["new_ids"]) <= set(ids)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert pq.read_table(out / "index" / "ids.parquet").num_rows == 96  # they entered the index
    # and the new items are found from the existing ones' side too (the index is symmetric): the
    # rebuilt answer table, which serves these queries, lists them
    catalogue = Catalogue.from_run(out)
    assert catalogue.table is not None and catalogue.table.related.shape == (96, 95)
    back = catalogue.answers([f"c{c}_0" for c in range(4)], 30)
    assert any(i.startswith("new") for a in back for i in a.item_ids)


def test_new_items_land_among_their_own_community_with_the_shipped_model(trained):
    out = trained["root"] / "cold-quality"
    embed_new_items(trained["run"], trained["grown"], out, log=lambda s: None)
    answer = Catalogue.from_run(out).answers(trained["new_ids"], 10)
    assert all(a.error is None and len(a.item_ids) == 10 for a in answer)
    same = {a.query: sum(community(i) == community(a.query) for i in a.item_ids) for a in answer}
    # chance is about 2.5 of 10; every new item well above it, and most of them all but perfect
    assert min(same.values()) >= 5 and np.mean(list(same.values())) >= 8, sorted(same.items())


@pytest.mark.slow  # a whole process run end to end: the full suite has it
def test_cold_start_from_the_command_line_and_its_refusals(trained, tmp_path):
    out = tmp_path / "cold-cli"
    env = subprocess_env()
    r = subprocess.run([sys.executable, "-m", "pinsage", "coldstart", "--run", str(trained["run"]),
                        "--data", str(trained["grown"]), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "16 new items embedded" in r.stdout
    assert json.loads((out / "coldstart.json").read_text())["n_new"] == 16
    rec = subprocess.run([sys.executable, "-m", "pinsage", "recommend", "--run", str(out), "--item", "new2_3",
                          "-k", "10"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert rec.returncode == 0, rec.stderr
    listed = [line.split()[1] for line in rec.stdout.splitlines()[3:]]
    assert len(listed) == 10 and sum(community(i) == 2 for i in listed) >= 6

    with pytest.raises(ValueError, match="no new item"):  # the training data itself adds nothing
        embed_new_items(trained["run"], trained["root"] / "data", tmp_path / "none", log=lambda s: None)
    with pytest.raises(ValueError, match="must differ from the run directory"):
        embed_new_items(trained["run"], trained["grown"], trained["run"], log=lambda s: None)


def test_only_the_new_items_interactions_join_the_graph(trained):
    """The run's held-out interactions between existing items (in the grown data too) stay out:
    they are the future for the run, and the next retrain's business."""
    from pinsage.data.dataset import load_dataset
    from pinsage.run.layout import RunDir
    from pinsage.serve.coldstart import extended_graph

    run = RunDir(trained["run"])
    ds = load_dataset(trained["grown"])
    ids = pd.Index(list(run.item_ids()) + trained["new_ids"])
    g, touched = extended_graph(run, ds.interactions, ids, set(trained["new_ids"]))
    train_edges = len(run.interactions(["context", "item"]))
    new_rows = ds.interactions[ds.interactions["item_id"].isin(trained["new_ids"])]
    assert len(ds.interactions) > train_edges + len(new_rows)  # held-out pairs exist that could leak
    assert g.n_edges == train_edges + len(new_rows)
    assert touched == new_rows["context_id"].nunique()
    degree = g.item_degree()
    assert (degree[len(run.item_ids()):] == [int((new_rows["item_id"] == i).sum()) for i in trained["new_ids"]]).all()


def test_a_new_items_degree_is_unknown_to_the_network_and_to_the_prior(trained, tmp_path):
    """Its log-degree input and its prior read the catalogue mean, as its cold twin in training did, and
    its score carries the network's learned cold offset."""
    import shutil

    import torch

    from pinsage.export.embeddings import read_prior
    from pinsage.model.network import load_model, save_model

    run = tmp_path / "run"  # the trained run with a non-zero prior weight
    shutil.copytree(trained["run"], run)
    model = load_model(run / "train")
    with torch.no_grad():
        model.prior_weight.fill_(0.02)
    save_model(model, run / "train")
    out = tmp_path / "cold-degree"
    embed_new_items(run, trained["grown"], out, log=lambda s: None)
    feats = pq.read_table(out / "features" / "features.parquet").to_pandas().set_index("item_id")
    mean = float(model.feature_mean[-1])
    assert np.allclose(feats.loc[trained["new_ids"], "log_degree"], mean, atol=1e-6)
    old = feats.drop(index=trained["new_ids"])["log_degree"]  # existing items: their training degree
    ids, _ = read_embeddings(out / "embeddings")
    prior = pd.Series(read_prior(out / "embeddings"), index=ids)
    offset = 0.0 if model.cold_bias is None else float(model.cold_bias.detach())  # the learned cold offset
    assert np.allclose(prior[trained["new_ids"]], 0.02 * mean + offset, atol=1e-6)
    assert np.allclose(prior[old.index], 0.02 * old, atol=1e-6) and old.std() > 0


def test_a_new_items_neighbourhood_is_what_was_engaged_beside_it_then_its_look_alikes(trained, tmp_path):
    """The existing items engaged within the positive window of a new item's interactions come first
    (most often first), its content neighbours fill the rest; an item without interactions has only
    content neighbours; no neighbour is new."""
    from pinsage.graph.neighbors import Neighbors
    from pinsage.run.layout import RunDir

    out = tmp_path / "cold-nbrs"
    embed_new_items(trained["run"], trained["grown"], out, log=lambda s: None)
    ids = RunDir(out).item_ids().astype(str)
    nb = Neighbors.load(out / "neighbors" / "neighbors.parquet")
    row = {i: k for k, i in enumerate(ids)}
    inter = pd.read_csv(trained["grown"] / "interactions.csv")
    train = RunDir(trained["run"]).interactions(["context_id", "item_id", "timestamp"])
    window = 3  # SamplerConfig.positive_window
    for new in trained["new_ids"]:
        got = [ids[i] for i in nb.items[row[new]][nb.mask[row[new]]]]
        assert len(got) == 5 and not any(g.startswith("new") for g in got)  # top_t = 5, existing items only
        contexts = inter.loc[inter["item_id"] == new, "context_id"]
        if new.endswith(("_0", "_1")):  # 3 interactions, each the last of its context in time
            counts = {}
            for c in contexts:
                mine = train[train["context_id"] == c]
                last = mine.sort_values("timestamp")["item_id"].astype(str).tolist()[-window:]
                for i in last:
                    counts[i] = counts.get(i, 0) + 1
            best = sorted(counts.values(), reverse=True)
            assert all(g in counts for g in got[:min(5, len(counts))])
            assert [counts[g] for g in got[:min(5, len(counts))]] == best[:min(5, len(counts))]
        else:
            assert contexts.empty
