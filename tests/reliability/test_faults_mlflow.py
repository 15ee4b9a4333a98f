"""Against a real MLflow tracking server (a process on 127.0.0.1, SQLite store, served artifacts):

* two DAG runs of different logical dates at once, as two processes: separate run directories and
  MLflow runs, nothing clobbered, one consistent champion decision;
* no secret from the environment or a parameter reaches MLflow params or tags, and the registered
  model holds no pickle;
* bad input through the real tasks: nothing registered, no alias moved, the DAG does not retry;
* the server stopped during and between steps: a clear, retryable error; restarted on the same port
  with the same store, the step succeeds and no second model version appears.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from pinsage.data.dataset import DatasetError
from tasks import (
    errors,
    evaluate,
    export,
    features,
    flow,
    graph,
    index,
    neighbors,
    prepare,
    register,
    registry,
    tracking,
    train,
)

from .conftest import ROOT, community_data, small_params, subprocess_env

pytestmark = pytest.mark.slow

MODEL = "reliability"
SECRETS = {"AWS_SECRET_ACCESS_KEY": "rel-aws-secret-7f3a91", "POSTGRES_PASSWORD": "rel-pg-secret-2b8c44",
           "AIRFLOW__CORE__FERNET_KEY": "rel-fernet-secret-91ad0e", "RAY_AUTH_TOKEN": "rel-ray-token-5e2f10",
           "MLFLOW_TRACKING_USERNAME": "pinsage", "MLFLOW_TRACKING_PASSWORD": "rel-mlflow-secret-c4d2aa"}

CHAIN = """
import json, os, sys
from tasks import flow
a = json.loads(sys.argv[1])
assert os.environ["AWS_SECRET_ACCESS_KEY"]  # the secrets are there to leak
r = flow.run_chain(a["params"], run_key=a["run_key"], dag_id="pinsage_daily", run_type="scheduled",
                   logical_date=a["logical_date"], data_interval_end=a["end"])
print("RESULT" + json.dumps({"run_dir": r["ref"]["run_dir"], "mlflow_run_id": r["ref"]["mlflow_run_id"],
                             "version": r["register"]["version"], "validation_mrr": r["evaluate"]["validation_mrr"]}))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def concurrent(mlflow_server, tmp_path_factory):
    """The daily runs of two logical dates started together (a backfill beside the scheduled run)."""
    tmp = tmp_path_factory.mktemp("concurrent")
    data = community_data(tmp / "data")  # context c at 1_000_000 + 1000 c + t, c < 120, t < 8
    runs = tmp / "runs"
    env = subprocess_env({**mlflow_server.env(runs), **SECRETS})
    specs = {"2025-01-01": (1_080_000, 0), "2025-01-02": (1_120_000, 1)}  # data interval end, seed
    procs = {}
    for day, (end, seed) in specs.items():
        params = small_params(data, model_name=MODEL, seed=seed, epochs=2, ray_address="ray://head:10001")
        arg = {"params": params, "run_key": f"scheduled__{day}T00:00:00+00:00",
               "logical_date": f"{day}T00:00:00+00:00",
               "end": datetime.fromtimestamp(end, tz=timezone.utc).isoformat()}
        procs[day] = subprocess.Popen([sys.executable, "-c", CHAIN, json.dumps(arg)], env=env, cwd=tmp,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for day, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-5000:]
        results[day] = dict(json.loads(out[out.rindex("RESULT") + 6:].splitlines()[0]), end=specs[day][0])
    return {"runs": runs, "results": results, "data": data}


def test_two_dag_runs_at_once_keep_separate_directories_runs_and_artifacts(mlflow_server, concurrent):
    c = mlflow_server.client()
    res = concurrent["results"]
    a, b = res["2025-01-01"], res["2025-01-02"]
    assert a["run_dir"] != b["run_dir"] and a["mlflow_run_id"] != b["mlflow_run_id"]
    assert {Path(r["run_dir"]).parent for r in res.values()} == {concurrent["runs"] / "pinsage_daily"}
    shas = set()
    for day, r in res.items():
        run_dir = Path(r["run_dir"])
        run = c.get_run(r["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["airflow.run_id"] == f"scheduled__{day}T00:00:00+00:00"
        assert run.data.tags["data_max_timestamp"] == str(r["end"])
        summary = json.loads((run_dir / "prepare" / "summary.json").read_text())
        assert summary["max_timestamp"] == r["end"]  # each run trained on its own day's data
        evaluation = next(d.dataset for d in run.inputs.dataset_inputs
                          if {t.key: t.value for t in d.tags}.get("mlflow.data.context") == "evaluation")
        assert json.loads(evaluation.profile)["validation_pairs"] == summary["n_valid_pairs"]
        # the model each step handed on is this run's own, end to end
        sha = _sha(run_dir / "train" / "model.pt")
        assert _sha(run_dir / "export" / "model" / "model.pt") == sha
        for part in ("embeddings", "index"):
            assert json.loads((run_dir / part / "source.json").read_text())["model_sha256"] == sha
        (run_dir / "dl").mkdir(exist_ok=True)
        logged = Path(c.download_artifacts(r["mlflow_run_id"], "checkpoint/model.pt", str(run_dir / "dl")))
        assert _sha(logged) == sha
        mv = c.get_model_version(MODEL, r["version"])
        assert mv.run_id == r["mlflow_run_id"] and mv.tags["model_sha256"] == sha
        assert float(mv.tags["validation_mrr"]) == pytest.approx(r["validation_mrr"], abs=5e-5)
        assert json.loads((run_dir / "steps" / "register.json").read_text())["version"] == r["version"]
        shas.add(sha)
        assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert len(shas) == 2
    assert json.loads((Path(a["run_dir"]) / "prepare" / "summary.json").read_text())["n_valid_pairs"] == 80
    assert json.loads((Path(b["run_dir"]) / "prepare" / "summary.json").read_text())["n_valid_pairs"] == 120
    # one gate decision at a time: the alias is on the better version, the other says why not
    versions = c.search_model_versions(f"name = '{MODEL}'")
    assert sorted(str(v.version) for v in versions) == sorted([a["version"], b["version"]])
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    other = next(str(v.version) for v in versions if str(v.version) != champion)
    mrr = {str(v.version): float(v.tags["validation_mrr"]) for v in versions}
    assert mrr[champion] >= mrr[other]
    tags = c.get_model_version(MODEL, other).tags
    assert (tags["pinsage.promotion"] == "rejected" and f"champion version {champion}" in
            tags["pinsage.promotion_reason"]) or tags.get("pinsage.replaced_by") == champion, tags
    assert c.get_model_version(MODEL, champion).tags["pinsage.promotion"] == "champion"
    assert (concurrent["runs"] / ".locks" / f"gate-{MODEL}.lock").exists()


def test_no_secret_reaches_mlflow_params_or_tags(mlflow_server, concurrent):
    c = mlflow_server.client()
    secrets = list(SECRETS.values())
    secrets.remove("pinsage")  # a user name, not a secret
    runs = [c.get_run(r["mlflow_run_id"]) for r in concurrent["results"].values()]
    for run in runs:
        values = {**run.data.params, **run.data.tags}
        leaks = [(k, s) for k, v in values.items() for s in secrets if s in str(v) or s in str(k)]
        assert leaks == [], leaks
        dst = Path(concurrent["runs"]) / f"cfg-{run.info.run_id}"
        dst.mkdir(exist_ok=True)
        config = Path(c.download_artifacts(run.info.run_id, "config.json", str(dst))).read_text()
        assert not [s for s in secrets if s in config]
    for mv in c.search_model_versions(f"name = '{MODEL}'"):
        assert not [s for s in secrets for v in mv.tags.values() if s in str(v)]


def test_the_registered_model_holds_no_pickle_and_pins_its_requirements(mlflow_server, concurrent, server_env,
                                                                        tmp_path):
    import faiss
    import mlflow
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    import yaml

    champion = c_version = str(mlflow_server.client().get_model_version_by_alias(MODEL, "champion").version)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{c_version}", dst_path=str(tmp_path)))
    found = [p for p in local.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in found}
    assert not suffixes & {".pkl", ".pickle", ".joblib", ".cloudpickle", ".dill"}, sorted(suffixes)
    loaded = {".pt": 0, ".parquet": 0, ".faiss": 0, ".npz": 0}
    for p in found:
        if p.suffix == ".pt":
            torch.load(p, weights_only=True)  # tensors only: refuses anything that needs unpickling code
        elif p.suffix == ".parquet":
            meta = pq.read_metadata(p).metadata or {}
            assert all(b"pickle" not in v for v in meta.values()), p
            pq.read_table(p)
        elif p.suffix == ".faiss":
            faiss.read_index(str(p))
        elif p.suffix == ".npz":
            np.load(p, allow_pickle=False)
        else:
            continue
        loaded[p.suffix] += 1
    assert loaded[".pt"] >= 1 and loaded[".parquet"] >= 2 and loaded[".faiss"] == 1, loaded
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    # a model from code: loaded by importing mlflow_model.py, not by unpickling a python_model.pkl
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model", pyfunc
    assert str(pyfunc["model_code_path"]).endswith(".py") and "python_model" not in pyfunc, pyfunc
    assert (local / Path(pyfunc["model_code_path"]).name).is_file()
    reqs = [line.strip() for line in (local / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert reqs and all("==" in r for r in reqs), reqs
    assert champion


def _bad_weight_dataset(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    (dst / "items.csv").write_text((src / "items.csv").read_text())
    inter = pd.read_csv(src / "interactions.csv", dtype=str)
    inter["weight"] = "1"
    inter.loc[41, "weight"] = "-2"
    inter.to_csv(dst / "interactions.csv", index=False)
    return dst


def test_bad_input_through_the_real_tasks_registers_nothing_and_moves_no_alias(
        mlflow_server, concurrent, server_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from pinsage_wiring import fail_fast
    finally:
        sys.path.remove(str(ROOT / "dags"))
    c = mlflow_server.client()
    before = sorted(str(v.version) for v in c.search_model_versions(f"name = '{MODEL}'"))
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    bad = _bad_weight_dataset(concurrent["data"], tmp_path / "bad")
    cases = [
        ("manual__bad_weight", small_params(bad, model_name=MODEL), DatasetError,
         "interactions.csv, column 'weight', row 43: expected a positive number, got '-2'"),
        ("manual__big_t", small_params(concurrent["data"], model_name=MODEL, top_t=60), errors.ConfigError,
         "DAG parameter 'top_t' (walks.top_t)"),
        ("manual__neg_epochs", small_params(concurrent["data"], model_name=MODEL, epochs=-1), errors.ConfigError,
         "DAG parameter 'epochs' (train.epochs): expected an integer >= 1, got -1"),
    ]
    exp = c.get_experiment_by_name("pinsage").experiment_id
    for run_key, params, error, message in cases:
        with pytest.raises(error) as info:
            flow.run_chain(params, run_key=run_key, dag_id="pinsage_daily")
        assert message in str(info.value)
        # the DAG's task wrapper fails it for good: Airflow does not retry what a retry cannot fix
        with pytest.raises(AirflowFailException, match=type(info.value).__name__), fail_fast():
            prepare.run(params, run_key=run_key, dag_id="pinsage_daily")  # as the DAG's prepare task calls it
        runs = c.search_runs([exp], f"tags.`airflow.run_id` = '{run_key}'")
        if run_key == "manual__neg_epochs":
            assert runs == []  # refused before any MLflow run or directory exists
            assert not (Path(server_env["PINSAGE_RUNS_DIR"]) / "pinsage_daily" / run_key).exists()
        else:
            assert len(runs) == 1 and runs[0].info.status == "FAILED"
            assert runs[0].data.tags["pinsage.failed_step"] == "prepare"
            assert message in runs[0].data.tags["pinsage.error"]
        assert sorted(str(v.version) for v in c.search_model_versions(f"name = '{MODEL}'")) == before
        assert str(c.get_model_version_by_alias(MODEL, "champion").version) == champion


def test_mlflow_server_down_fails_clearly_retries_and_registers_once(mlflow_server, concurrent, server_env):
    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from pinsage_wiring import run_step
    finally:
        sys.path.remove(str(ROOT / "dags"))
    c = mlflow_server.client()
    params = small_params(concurrent["data"], model_name=MODEL, seed=7, epochs=1)
    ref = prepare.run(params, run_key="manual__outage", dag_id="pinsage_daily", run_type="manual")
    f = features.run(ref)
    n = neighbors.run(ref, graph=graph.run(ref)["graph"])
    t = train.run(ref, features=f["features"], neighbors=n["neighbors"])
    e = export.run(ref, model_uri=t["model_uri"])
    i = index.run(ref, embeddings_dir=e["embeddings_dir"], model_uri=e["model_uri"], model_sha256=e["model_sha256"])
    m = evaluate.run(ref, embeddings_dir=i["embeddings_dir"], index_dir=i["index_dir"])
    handed = dict(model_uri=i["model_uri"], embeddings_dir=i["embeddings_dir"], index_dir=i["index_dir"],
                  metrics=m["metrics"])
    before = len(c.search_model_versions(f"name = '{MODEL}'"))
    champion = str(c.get_model_version_by_alias(MODEL, "champion").version)
    try:
        # the server goes away while a step is talking to it
        with pytest.raises(errors.MlflowUnavailable, match="lost the tracking server") as lost:
            with tracking.step(ref, "evaluate") as cc:
                mlflow_server.stop()
                cc.log_metric(ref["mlflow_run_id"], "probe", 1.0)
        assert mlflow_server.url in str(lost.value)
        # the next step finds it down: fails in seconds, says where and what, and is retryable
        t0 = time.monotonic()
        with pytest.raises(errors.MlflowUnavailable) as down:
            register.run(ref, **handed)
        assert time.monotonic() - t0 < 30
        text = str(down.value)
        assert f"MLflow tracking server {mlflow_server.url} is unreachable" in text, text
        assert "Nothing was registered" in text
        assert not isinstance(down.value, errors.permanent_errors())
        # the DAG's wrapper passes it through unchanged, so Airflow's retries (2, with backoff) apply
        with pytest.raises(errors.MlflowUnavailable):
            run_step(register, ref, **handed)
    finally:
        mlflow_server.start()  # the same port and the same store: what a restarted server looks like
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == before
    r = register.run(ref, **handed)  # the retry
    versions = c.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == before + 1
    assert [str(v.version) for v in versions if v.run_id == ref["mlflow_run_id"]] == [r["version"]]
    again = register.run(ref, **handed)  # a cleared task, a second retry: still one version
    assert again["version"] == r["version"] and again["promoted"] == r["promoted"]
    assert len(c.search_model_versions(f"name = '{MODEL}'")) == before + 1
    run = c.get_run(ref["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["pinsage.model_version"] == r["version"]
    alias = str(c.get_model_version_by_alias(MODEL, "champion").version)
    assert alias == (r["version"] if r["promoted"] else champion)


def test_the_champion_gate_waits_for_a_concurrent_gate(store, tmp_path):
    """Two register steps at once: the second gate decides only after the first has, on what the first
    left (the lock is a file in the runs directory every worker shares). Here the first "gate" is this
    test holding the lock while it makes v0 the champion; a gate that did not wait would have read "no
    champion yet" and promoted v1."""
    import threading

    from orchestration.test_registry import make_version

    c = store.client()
    v0 = make_version(store, tmp_path, "gate-lock", 0.5)
    v1 = make_version(store, tmp_path, "gate-lock", 0.1)
    results = []
    with registry.gate_lock("gate-lock") as path:
        assert path.parent == Path(store.env["PINSAGE_RUNS_DIR"]).resolve() / ".locks"
        worker = threading.Thread(target=lambda: results.append(registry.gate(c, "gate-lock", v1, 0.1, 0.0)))
        worker.start()
        time.sleep(1.0)  # a gate that ignored the lock would have decided by now (it takes ~0.1 s here)
        c.set_registered_model_alias("gate-lock", "champion", v0)  # what the first gate decided
        c.set_model_version_tag("gate-lock", v0, "pinsage.promotion", "champion")
    worker.join(timeout=60)
    assert results and results[0][0] is False, results
    assert f"does not beat champion version {v0} (0.5000)" in results[0][1]
    assert str(registry.champion_version(c, "gate-lock").version) == v0
