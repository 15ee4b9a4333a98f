"""The steps in tasks/ against a real MLflow store (SQLite), chained as the DAG chains them."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pinsage.data.dataset import DatasetError, data_fingerprint
from pinsage.util.io import sha256_file
from tasks import errors, evaluate, export, flow, index, prepare, provenance, register, runs, settings, train

from .conftest import ROOT, community_data, small_params, subprocess_env, weak_params, with_new_items

MODEL = "pinsage-tasks-test"


@pytest.fixture(scope="module")
def first_run(module_store, tmp_path_factory):
    data = community_data(tmp_path_factory.mktemp("data") / "community")
    params = small_params(data, model_name=MODEL)
    result = flow.run_chain(params, run_key="manual__first", dag_id="pinsage_daily",
                            logical_date="2025-01-01T00:00:00+00:00")
    return {"data": data, "params": params, **result}


def _artifacts(c, run_id, path=None) -> set[str]:
    out = set()
    for f in c.list_artifacts(run_id, path):
        out |= _artifacts(c, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_a_run_records_tags_params_metric_histories_and_every_artifact(module_store, first_run):
    c = module_store.client()
    ref = first_run["ref"]
    run = c.get_run(ref["mlflow_run_id"])
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["airflow.dag_id"] == "pinsage_daily" and tags["airflow.run_id"] == "manual__first"
    assert tags["airflow.logical_date"] == "2025-01-01T00:00:00+00:00"
    assert tags["git_commit"] == provenance.git_commit() and tags["git_commit"] != ""
    assert tags["data_sha256"] == data_fingerprint(first_run["data"])
    assert tags["pinsage.model_version"] == first_run["register"]["version"]
    assert run.data.params["model.hidden_dim"] == "16" and run.data.params["train.epochs"] == "3"
    assert run.data.params["features.word2vec_dim"] == "16"
    assert run.data.params["settings.model_name"] == MODEL
    for key in ("train_loss", "epoch_validation_mrr", "learning_rate", "epoch_seconds"):
        assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    history = json.loads((Path(ref["run_dir"]) / "train" / "history.json").read_text())
    logged = {m.step: m.value for m in c.get_metric_history(run.info.run_id, "train_loss")}
    assert logged == pytest.approx({e["epoch"]: e["loss"] for e in history["epochs"]})
    # three epochs of a budget of three, never four without gain: the budget stopped it, and MLflow says so
    assert history["stopped"]["reason"] == "budget"
    assert tags["pinsage.training_stopped"] == f"budget: {history['stopped']['detail']}"
    assert run.data.metrics["epochs_trained"] == 3
    metrics = json.loads((Path(ref["run_dir"]) / "metrics.json").read_text())
    assert run.data.metrics["validation_mrr"] == pytest.approx(metrics["validation"]["methods"]["pinsage"]["mrr"])
    assert run.data.metrics["test.popularity.hr_at_10"] == pytest.approx(metrics["methods"]["popularity"]["hr@10"])
    files = _artifacts(c, run.info.run_id)
    expected = {"config.json", "prepare/summary.json", "features/features.parquet", "graph/graph.npz",
                "neighbors/neighbors.parquet", "neighbors/visits.npz", "checkpoint/model.pt",
                "checkpoint/model_config.json", "checkpoint/history.json", "checkpoint/last.pt",
                "embeddings/part-00000.parquet", "embeddings/manifest.json", "embeddings/source.json",
                "index/index.faiss", "index/ids.parquet", "index/source.json", "metrics.json", "metrics.md"}
    assert expected <= files, expected - files
    # XCom carries references only: every step's result is small and JSON
    for name in flow.ORDER:
        record = runs.step_record_path(ref, name)
        assert record.stat().st_size < 4000, name


def test_what_the_mlflow_ui_shows_datasets_sources_descriptions_and_the_logged_model(module_store, first_run):
    import mlflow

    c = module_store.client()
    ref = first_run["ref"]
    run = c.get_run(ref["mlflow_run_id"])
    sha = data_fingerprint(first_run["data"])
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    for context, ds in inputs.items():
        assert ds.digest == sha[:32] and json.loads(ds.profile)["sha256"] == sha, context
        assert json.loads(ds.source)["uri"] == str(first_run["data"]), context
    assert json.loads(inputs["training"].profile)["training_interactions"] > 0
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "Airflow DAG pinsage_daily" and tags["mlflow.user"]
    assert "community" in tags["mlflow.note.content"] and "test pairs" in tags["mlflow.note.content"]
    exp = c.get_experiment(run.info.experiment_id)
    assert "champion" in exp.tags["mlflow.note.content"] and exp.tags["project"] == "pinsage"
    rm = c.get_registered_model(MODEL)
    assert "load_model" in rm.description and rm.tags["project"] == "pinsage"
    # one point per evaluation figure (not copied again by the model logging); no 17-digit tags, no clutter
    assert len(c.get_metric_history(run.info.run_id, "test_mrr")) == 1
    chosen = json.loads(Path(first_run["evaluate"]["metrics"]).read_text())["hyperparameters"]
    assert run.data.params["baselines.ease.lambda"] == f"{chosen['ease']['lambda']:g}"
    assert {"baselines.rp3beta.alpha", "baselines.rp3beta.beta"} <= set(run.data.params)
    assert not any(k.startswith("data.") or "hr_at_50" in k for k in run.data.metrics)
    mv = c.get_model_version(MODEL, first_run["register"]["version"])
    assert len(mv.tags["validation_mrr"]) == 6 and len(mv.tags["test_mrr"]) == 6  # "0.1510"
    assert mv.description.startswith("**Champion**") and "best baseline (" in mv.description
    assert sha in mv.description and tags["git_commit"] in mv.description and "report.html" in mv.description
    logged = mlflow.get_logged_model(run.data.tags["pinsage.logged_model_id"])
    assert logged.name == MODEL and logged.tags["mlflow.source.name"] == "Airflow DAG pinsage_daily, task register"
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY") and mv.source == f"models:/{logged.model_id}"
    linked = {m.key: m for m in logged.metrics}  # the evaluation, linked to its dataset
    assert linked["test_mrr"].value == pytest.approx(first_run["evaluate"]["test_mrr"])
    assert (linked["test_mrr"].dataset_name, linked["test_mrr"].dataset_digest) == (inputs["evaluation"].name,
                                                                                    sha[:32])
    assert len([m for m in logged.metrics if m.key == "test_mrr"]) == 1


def test_the_registered_version_loads_as_champion_and_recommends_related_items(module_store, first_run):
    import mlflow

    c = module_store.client()
    mv = c.get_model_version_by_alias(MODEL, "champion")
    assert str(mv.version) == first_run["register"]["version"] == "1"
    assert mv.run_id == first_run["ref"]["mlflow_run_id"]
    assert mv.tags["pinsage.promotion"] == "champion"
    assert float(mv.tags["validation_mrr"]) == pytest.approx(first_run["evaluate"]["validation_mrr"], abs=5e-5)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    sig = model.metadata.signature
    assert [s.name for s in sig.inputs.inputs] == ["item_id", "k"]
    assert "score" in [s.name for s in sig.outputs.inputs]
    reqs = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion/requirements.txt")).read_text()
    # exact pins, and no torch: answering never runs the network
    assert "torch" not in reqs and "faiss-cpu==" in reqs and "mlflow==" in reqs and "pyarrow==" in reqs
    out = model.predict(pd.DataFrame({"item_id": ["i1", "i40"]}), params={"k": 5})
    assert list(out.columns) == ["query_item_id", "rank", "item_id", "title", "score", "error"]
    assert out["error"].isna().all()
    assert out["query_item_id"].tolist() == ["i1"] * 5 + ["i40"] * 5
    assert (out["item_id"] != out["query_item_id"]).all()
    assert out["title"].tolist() == [f"item {i[1:]}" for i in out["item_id"]]
    for query, group in out.groupby("query_item_id"):
        assert group["score"].is_monotonic_decreasing
        # the two communities of the fabricated data: items 0-29 and 30-59
        same = [(int(i[1:]) < 30) == (int(query[1:]) < 30) for i in group["item_id"]]
        assert sum(same) >= 4, group
    per_row = model.predict(pd.DataFrame({"item_id": ["i2", "i3"], "k": [1, 3]}))
    assert per_row.groupby("query_item_id").size().to_dict() == {"i2": 1, "i3": 3}
    mixed = model.predict(pd.DataFrame({"item_id": ["nope", "i1"]}), params={"k": 3})  # one bad row, not a batch
    assert mixed["error"].tolist()[0] == "unknown item_id 'nope': not in the model's catalogue"
    assert mixed["query_item_id"].tolist() == ["nope", "i1", "i1", "i1"] and mixed["error"][1:].isna().all()


def test_retried_steps_recompute_the_same_outputs_and_register_nothing_twice(module_store, first_run):
    c = module_store.client()
    ref = first_run["ref"]
    run_dir = Path(ref["run_dir"])
    rid = ref["mlflow_run_id"]
    weights = torch.load(run_dir / "train" / "model.pt", weights_only=True)
    emb_before = pd.read_parquet(run_dir / "embeddings" / "part-00000.parquet")
    metrics_before = (run_dir / "metrics.json").read_text()

    t = train.run(ref)  # resumes from last.pt: nothing retrained, the same weights
    again = torch.load(run_dir / "train" / "model.pt", weights_only=True)
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    assert t["model_uri"] == first_run["train"]["model_uri"]
    # the rest of the chain again, handed what the DAG hands (export, index, evaluate, register)
    r = flow.continue_chain(ref, {k: first_run[k] for k in ("prepare", "features", "graph", "neighbors")}
                            | {"train": t})["register"]

    emb_after = pd.read_parquet(run_dir / "embeddings" / "part-00000.parquet")
    assert emb_after["item_id"].tolist() == emb_before["item_id"].tolist()
    assert np.array_equal(np.stack(emb_after["embedding"]), np.stack(emb_before["embedding"]))
    assert (run_dir / "metrics.json").read_text() == metrics_before
    assert r["version"] == first_run["register"]["version"] and r["promoted"]
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == 1
    for key in ("train_loss", "validation_mrr", "test.pinsage.mrr"):
        steps = [mm.step for mm in c.get_metric_history(rid, key)]
        assert len(steps) == len(set(steps)), (key, steps)  # no duplicated points
    assert c.get_run(rid).info.status == "FINISHED"
    # no half-written artifact is left behind by the atomic writes
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_export_and_index_use_the_model_they_are_handed(module_store, first_run, tmp_path):
    ref = first_run["ref"]
    run_dir = Path(ref["run_dir"])
    checkpoint_uri = first_run["train"]["model_uri"]
    other = tmp_path / "other-model"
    other.mkdir()
    state = torch.load(run_dir / "train" / "model.pt", weights_only=True)
    torch.manual_seed(1)
    torch.save({k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()},
               other / "model.pt")
    (other / "model_config.json").write_text((run_dir / "train" / "model_config.json").read_text())
    try:
        e = export.run(ref, model_uri=str(other))
        assert e["model_sha256"] == sha256_file(other / "model.pt") != first_run["train"]["model_sha256"]
        assert json.loads((run_dir / "embeddings" / "source.json").read_text())["model_uri"] == str(other)
        with pytest.raises(ValueError, match="not from the handed model"):
            index.run(ref, embeddings_dir=e["embeddings_dir"], model_uri=checkpoint_uri,
                      model_sha256=first_run["train"]["model_sha256"])
        i = index.run(ref, embeddings_dir=e["embeddings_dir"], model_uri=e["model_uri"],
                      model_sha256=e["model_sha256"])
        assert json.loads((run_dir / "index" / "source.json").read_text())["model_sha256"] == e["model_sha256"]
        with pytest.raises(ValueError, match="re-run export and index"):  # never registers a mixed model
            register.run(ref, model_uri=checkpoint_uri, embeddings_dir=i["embeddings_dir"],
                         index_dir=i["index_dir"])
        # a registered version can be handed too (its model_dir artifact), aliases resolved to a version
        e = export.run(ref, model_uri=f"models:/{MODEL}@champion")
        assert e["model_uri"] == f"models:/{MODEL}/1"
        assert e["model_sha256"] == first_run["train"]["model_sha256"]
    finally:
        e = export.run(ref, model_uri=checkpoint_uri)
        index.run(ref, embeddings_dir=e["embeddings_dir"], model_uri=e["model_uri"], model_sha256=e["model_sha256"])


def test_a_failed_evaluation_marks_the_run_failed_and_never_moves_champion(module_store, first_run):
    c = module_store.client()
    params = small_params(first_run["data"], model_name=MODEL, seed=5)
    ref = prepare.run(params, run_key="manual__broken", dag_id="pinsage_daily", run_type="manual")
    for step in ("features", "graph", "neighbors", "train", "export", "index"):
        __import__(f"tasks.{step}", fromlist=["run"]).run(ref)
    (Path(ref["run_dir"]) / "prepare" / "valid.parquet").unlink()  # evaluation cannot run
    with pytest.raises(FileNotFoundError, match="valid.parquet"):
        evaluate.run(ref)
    run = c.get_run(ref["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["pinsage.failed_step"] == "evaluate"
    assert not (Path(ref["run_dir"]) / "metrics.json").exists()
    with pytest.raises(FileNotFoundError, match="metrics"):
        register.run(ref)
    assert [str(v.version) for v in c.search_model_versions(f"name = '{MODEL}'")] == ["1"]
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == "1"
    # a retry after the cause is fixed recovers the run
    prepare.run(params, run_key="manual__broken", dag_id="pinsage_daily", run_type="manual")
    evaluate.run(ref)
    run = c.get_run(ref["mlflow_run_id"])
    assert run.info.status == "RUNNING" and "pinsage.failed_step" not in run.data.tags


def test_a_scheduled_run_trains_as_of_its_data_interval_end(module_store, first_run):
    c = module_store.client()
    end = datetime.fromtimestamp(1_000_000 + 1000 * 60, tz=timezone.utc)  # half of the contexts' rows
    assert prepare.resolve_max_timestamp({}, "scheduled", end) == 1_060_000
    assert prepare.resolve_max_timestamp({}, "backfill", end.isoformat()) == 1_060_000
    assert prepare.resolve_max_timestamp({}, "manual", end) is None
    assert prepare.resolve_max_timestamp({"max_timestamp": 5}, "scheduled", end) == 5
    params = small_params(first_run["data"], model_name=MODEL)
    ref = prepare.run(params, run_key="scheduled__2025-01-02", dag_id="pinsage_daily", run_type="scheduled",
                      data_interval_end=end.isoformat())
    summary = json.loads((Path(ref["run_dir"]) / "prepare" / "summary.json").read_text())
    full = json.loads((Path(first_run["ref"]["run_dir"]) / "prepare" / "summary.json").read_text())
    assert summary["max_timestamp"] == 1_060_000
    assert 0 < summary["n_train_interactions"] < full["n_train_interactions"]
    assert summary["n_valid_pairs"] == 60  # contexts u0..u59 lie wholly before the interval's end
    assert c.get_run(ref["mlflow_run_id"]).data.tags["data_max_timestamp"] == "1060000"
    # the same scheduled run again (a backfill of that date, a cleared task) finds the same MLflow run
    again = prepare.run(params, run_key="scheduled__2025-01-02", dag_id="pinsage_daily", run_type="scheduled",
                        data_interval_end=end.isoformat())
    assert again["mlflow_run_id"] == ref["mlflow_run_id"]
    assert json.loads((Path(ref["run_dir"]) / "prepare" / "summary.json").read_text()) == summary


def test_form_parameters_and_overrides_build_the_config(tmp_path):
    cfg = settings.build_config({"data": "data/ml-latest-small", "epochs": 2, "hidden_dim": 32, "top_t": 7,
                               "seed": 3, "learning_rate": 0.01, "device": "cpu",
                               "overrides": {"model.n_layers": 1, "train.sampler.batch_size": 128}},
                              tmp_path / "out", max_timestamp=123)
    assert cfg.data == str(ROOT / "data" / "ml-latest-small")
    assert (cfg.train.epochs, cfg.model.hidden_dim, cfg.walks.top_t, cfg.train.learning_rate) == (2, 32, 7, 0.01)
    assert (cfg.seed, cfg.walks.seed, cfg.train.seed, cfg.features.seed) == (3, 3, 3, 3)
    assert cfg.model.n_layers == 1 and cfg.train.sampler.batch_size == 128
    assert cfg.max_timestamp == 123 and cfg.out == str(tmp_path / "out")
    for bad in ({"overrides": {"model.nope": 1}}, {"overrides": {"train.epochs": "many"}},
                {"overrides": {"out": "/elsewhere"}}, {"epochs": 1.5}):
        with pytest.raises(errors.ConfigError):
            settings.build_config(bad, tmp_path)
    ray_cfg = settings.build_config({"engine": "ray", "ray_address": "ray://head:10001"}, tmp_path)
    assert (ray_cfg.engine, ray_cfg.ray_address) == ("ray", "ray://head:10001")
    with pytest.raises(errors.ConfigError, match="DAG parameter 'engine'"):
        settings.build_config({"engine": "spark"}, tmp_path)
    with pytest.raises(errors.ConfigError):
        settings.build_settings({"promotion_margin": -1})
    assert settings.build_settings({})["model_name"] == "pinsage"
    permanent = errors.permanent_errors()
    assert DatasetError in permanent and errors.ConfigError in permanent


def test_a_bad_dataset_fails_prepare_with_the_dataset_error(module_store, tmp_path):
    with pytest.raises(DatasetError):
        prepare.run({"data": str(tmp_path / "missing")}, run_key="manual__bad", dag_id="t")


@pytest.mark.slow
def test_steps_run_from_the_command_line(module_store, first_run, tmp_path):
    env = subprocess_env(module_store.env)
    args = ["--data", str(first_run["data"]), "--run-id", "cli-run", "--epochs", "1", "--hidden-dim", "8",
            "--output-dim", "4", "--top-t", "3", "--walks-per-item", "20", "--model-name", MODEL,
            "--device", "cpu"]
    args += [f"--override={k}={json.dumps(v)}" for k, v in first_run["params"]["overrides"].items()]
    p = subprocess.run([sys.executable, "-m", "tasks.prepare", *args], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ref = json.loads(p.stdout[p.stdout.index("{"):])
    assert Path(ref["run_dir"]) == Path(module_store.env["PINSAGE_RUNS_DIR"]) / "cli" / "cli-run"
    g = subprocess.run([sys.executable, "-m", "tasks.graph", "--run-dir", ref["run_dir"]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert g.returncode == 0, g.stderr[-3000:]
    assert json.loads(g.stdout[g.stdout.index("{"):])["graph"] == str(Path(ref["run_dir"]) / "graph" / "graph.npz")
    c = module_store.client()
    assert "graph/graph.npz" in _artifacts(c, ref["mlflow_run_id"])
    assert c.get_run(ref["mlflow_run_id"]).data.params["train.epochs"] == "1"


def test_a_refresh_never_replaces_a_champion_that_a_daily_run_moved_meanwhile(module_store, first_run, tmp_path):
    """``pinsage_refresh`` and ``pinsage_daily`` at once: the refresh embeds from champion P; meanwhile
    the daily run registers D, which takes champion; the refresh's register step, within its allowed
    loss of P, must not replace D."""
    from tasks import refresh

    c = module_store.client()
    weak = flow.run_chain(weak_params(first_run["data"], model_name=MODEL), run_key="manual__race_weak",
                          dag_id="pinsage_daily")
    p = weak["register"]["version"]
    c.set_registered_model_alias(MODEL, "champion", p)  # a weak champion, so that D surely beats it
    data, _ = with_new_items(first_run["data"], tmp_path / "data")
    embedded = refresh.embed({"data": str(data), "model_name": MODEL, "max_mrr_loss": 0.5}, run_key="race_refresh")
    assert embedded["parent_version"] == p and embedded["n_new"] == 3
    daily = flow.run_chain(first_run["params"], run_key="manual__race_daily", dag_id="pinsage_daily")
    d = daily["register"]["version"]
    assert daily["register"]["promoted"], daily["register"]["reason"]
    refused = refresh.register(embedded)
    assert not refused["promoted"]
    assert refused["reason"] == (f"a refresh replaces only the version it refreshed: champion was version {p} "
                                 f"when this refresh began and is now version {d}")
    assert str(c.get_model_version_by_alias(MODEL, "champion").version) == d
    assert c.get_model_version(MODEL, refused["version"]).tags["pinsage.promotion"] == "rejected"


def test_a_refresh_embeds_new_items_without_retraining_and_takes_champion_through_the_gate(
        module_store, first_run, tmp_path):
    """Runs last in this module: it moves the champion."""
    import mlflow

    from pinsage.export.embeddings import read_embeddings
    from tasks import refresh

    c = module_store.client()
    parent = c.get_model_version_by_alias(MODEL, "champion")
    data, new = with_new_items(first_run["data"], tmp_path / "data")
    # no loss allowed: the new items join every ranking, so the refresh loses a little and is refused
    strict = refresh.embed({"data": str(data), "model_name": MODEL, "max_mrr_loss": 0.0}, run_key="refresh_0")
    refused = refresh.register(strict)
    assert not refused["promoted"] and "does not beat champion version" in refused["reason"]
    assert c.get_model_version_by_alias(MODEL, "champion").version == parent.version
    # within 5% of the champion's MRR on its own pairs (3 new items in a 60-item catalogue): it moves
    embedded = refresh.embed({"data": str(data), "model_name": MODEL, "max_mrr_loss": 0.05}, run_key="refresh_1")
    assert embedded["n_new"] == 3 and embedded["parent_version"] == str(parent.version)
    assert embedded["max_abs_change_existing"] <= 1e-6  # no existing item's embedding moves
    registered = refresh.register(embedded)
    mv = c.get_model_version(MODEL, registered["version"])
    assert mv.tags["pinsage.kind"] == "refresh" and mv.tags["pinsage.parent_version"] == str(parent.version)
    assert registered["promoted"], registered["reason"]
    gate = json.loads(mv.tags["pinsage.gate"])  # both versions scored on the champion's own pairs, all of them
    assert gate["n_pairs"] == gate["n_total"] > 0 and gate["champion"] >= gate["candidate"] > 0.95 * gate["champion"]
    assert c.get_model_version_by_alias(MODEL, "champion").version == mv.version
    # the served champion answers for a new item, with items of its own community
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(pd.DataFrame({"item_id": new[:1] + ["i1"]}), params={"k": 5})
    assert out["error"].isna().all()
    related = out.loc[out["query_item_id"] == new[0], "item_id"].tolist()
    assert len(related) == 5 and sum(i.startswith("new") or int(i[1:]) < 30 for i in related) >= 4, related
    # every old item's vector is the parent's, exactly as served
    old_ids, old_emb = read_embeddings(mlflow.artifacts.download_artifacts(
        f"models:/{MODEL}/{parent.version}/artifacts/embeddings"))
    ids, emb = read_embeddings(Path(embedded["out"]) / "embeddings")
    assert list(ids[:len(old_ids)]) == list(old_ids) and np.abs(emb[:len(old_ids)] - old_emb).max() <= 1e-6
    # its report page (an MLflow artifact) shows the new items with their related items
    report = mlflow.artifacts.download_artifacts(run_id=registered["mlflow_run_id"], artifact_path="report.html")
    html = Path(report).read_text()
    assert "New items, embedded without retraining: 3 of the 3 added" in html
    assert all(f"new item {k}" in html for k in range(3))
    # the refreshed champion can be refreshed again; with nothing new nothing is registered
    again = refresh.embed({"data": str(data), "model_name": MODEL}, run_key="refresh_2")
    assert again["n_new"] == 0 and again["parent_version"] == registered["version"]
