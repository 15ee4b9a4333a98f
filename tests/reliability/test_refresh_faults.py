"""The refresh (``tasks/refresh.py``: ``embed`` then ``register``) against a real MLflow tracking server
(a process on 127.0.0.1, SQLite store, served artifacts), after a daily run made a champion:

* a new item's row in the items file is defective: ``embed`` refuses it with a DatasetError naming the
  file, the row, the column and what was expected; the DAG does not retry; nothing is registered and
  ``champion`` stays where it was;
* the server goes down between ``embed`` and ``register``, and again while ``register`` runs (after it
  registered the version, before the gate): each attempt fails with an error the DAG retries;
  restarted on the same port with the same store, the retry registers exactly one version for the
  refresh and ``champion`` is a single version.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from orchestration.conftest import with_new_items

from pinsage.data.dataset import DatasetError, load_dataset
from tasks import errors, flow, refresh, registry

from .conftest import ROOT, community_data, small_params

pytestmark = pytest.mark.slow

MODEL = "reliability-refresh"


def _call_step():
    """``call(function, *args)`` as the refresh DAG's tasks call a step: under the wiring's fail_fast."""
    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from pinsage_wiring import fail_fast
    finally:
        sys.path.remove(str(ROOT / "dags"))

    def call(function, *args, **kwargs):
        with fail_fast():
            return function(*args, **kwargs)
    return call


def _versions(c) -> list[str]:
    return sorted((str(v.version) for v in c.search_model_versions(f"name = '{MODEL}'")), key=int)


def _champion(c) -> str:
    return str(c.get_model_version_by_alias(MODEL, "champion").version)


@pytest.fixture(scope="module")
def champion(mlflow_server, tmp_path_factory):
    """A daily run (1 epoch, tiny data) registered under MODEL: its version is the first champion."""
    import mlflow

    tmp = tmp_path_factory.mktemp("refresh-champion")
    data = community_data(tmp / "data")  # 60 items in two communities, 120 contexts
    with pytest.MonkeyPatch.context() as mp:
        for k, v in dict(mlflow_server.env(tmp / "runs"), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                         MLFLOW_HTTP_REQUEST_TIMEOUT="60").items():
            mp.setenv(k, v)
        for k in ("MLFLOW_REGISTRY_URI", "PINSAGE_MLFLOW_ARTIFACT_ROOT"):
            mp.delenv(k, raising=False)
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_registry_uri(mlflow_server.url)
        r = flow.run_chain(small_params(data, model_name=MODEL, epochs=1), run_key="manual__refresh_parent",
                           dag_id="pinsage_daily")
    assert r["register"]["promoted"], r["register"]["reason"]
    return {"data": data, "version": r["register"]["version"]}


def _empty_id_csv(items: pd.DataFrame, root: Path) -> None:
    items.loc[items["item_id"] == "new1", "item_id"] = ""
    items.to_csv(root / "items.csv", index=False)


def _null_id_parquet(items: pd.DataFrame, root: Path) -> None:
    items = items.astype(object)
    items.loc[items["item_id"] == "new1", "item_id"] = None
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), root / "items.parquet")  # wins over .csv


def test_a_defective_new_item_row_fails_embed_naming_file_row_and_column_and_registers_nothing(
        mlflow_server, champion, server_env, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    c = mlflow_server.client()
    good, new = with_new_items(champion["data"], tmp_path / "good")
    before, parent = _versions(c), _champion(c)
    exp = c.get_experiment_by_name("pinsage").experiment_id
    # the header is line 1, the 60 known items lines 2-61, new0 line 62: new1 is line 63 (Parquet: row 62)
    cases = [("empty_id_csv", _empty_id_csv, "items.csv, column 'item_id', row 63: item_id is empty; "
                                             "expected a non-empty id", ("items.csv", "item_id", 63)),
             ("null_id_parquet", _null_id_parquet, "items.parquet, column 'item_id', row 62: item_id is missing "
                                                   "(null); expected a non-empty id", ("items.parquet", "item_id", 62))]
    for name, defect, message, (file, column, row) in cases:
        bad = tmp_path / name
        shutil.copytree(good, bad)
        defect(pd.read_csv(good / "items.csv", dtype=str, keep_default_na=False), bad)
        params = {"data": str(bad), "model_name": MODEL, "max_mrr_loss": 0.5}
        run_key = f"manual__refresh_{name}"
        with pytest.raises(DatasetError) as info:
            refresh.embed(params, run_key=run_key)
        assert str(info.value) == message
        assert (info.value.file, info.value.column, info.value.row) == (file, column, row)
        # the DAG's task fails for good: a retry cannot fix the file
        with pytest.raises(AirflowFailException, match=re.escape(f"DatasetError: {message}")):
            _call_step()(refresh.embed, params, run_key=run_key, dag_id=refresh.DAG_ID)
        run_dir = refresh.run_dir_for(refresh.DAG_ID, run_key)
        assert not (run_dir / "refresh").exists() and not list(run_dir.rglob("refresh_embed*"))  # no step record
        assert c.search_runs([exp], f"tags.`airflow.run_id` = '{run_key}'") == []  # no MLflow run either
        assert _versions(c) == before
        assert _champion(c) == parent
    # the same files without the defect load: it was the row, not something else, that failed
    assert load_dataset(good).items["item_id"].tolist()[-3:] == new
    assert _versions(c) == before and _champion(c) == parent


def test_mlflow_down_during_refresh_register_fails_retryably_and_the_retry_registers_once(
        mlflow_server, champion, server_env, tmp_path, monkeypatch):
    c = mlflow_server.client()
    data, _ = with_new_items(champion["data"], tmp_path / "data")
    run_key = "manual__refresh_outage"
    embedded = refresh.embed({"data": str(data), "model_name": MODEL, "max_mrr_loss": 0.5}, run_key=run_key)
    assert embedded["n_new"] == 3
    parent = embedded["parent_version"]
    assert parent == _champion(c)
    before = _versions(c)
    exp = c.get_experiment_by_name("pinsage").experiment_id
    call_step = _call_step()
    try:
        # 1. the server is gone between the two tasks: register fails in seconds, says where and what
        mlflow_server.stop()
        t0 = time.monotonic()
        with pytest.raises(errors.MlflowUnavailable) as down:
            refresh.register(embedded)
        assert time.monotonic() - t0 < 30
        text = str(down.value)
        assert f"MLflow tracking server {mlflow_server.url} is unreachable" in text, text
        assert "Nothing was registered" in text and "retried" in text
        assert not isinstance(down.value, errors.permanent_errors())
        with pytest.raises(errors.MlflowUnavailable):  # the DAG's wrapper lets Airflow retry it
            call_step(refresh.register, embedded)
    finally:
        mlflow_server.start()  # the same port and the same store
    assert _versions(c) == before and _champion(c) == parent
    assert c.search_runs([exp], f"tags.`airflow.run_id` = '{run_key}'") == []

    # 2. the first retry loses the server while it runs: after the version is registered, before the gate
    real = registry.like_with_like
    lost = []

    def server_lost(*args, **kwargs):
        lost.append(_versions(c))  # what was registered when the server went away
        mlflow_server.stop()
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "like_with_like", server_lost)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception) as mid:
            refresh.register(embedded)
        assert time.monotonic() - t0 < 60
        assert lost and len(lost[0]) == len(before) + 1  # it did get as far as registering the version
        # Airflow retries it: not an error the DAG's wrapper turns into a permanent failure
        assert not isinstance(mid.value, errors.permanent_errors()), repr(mid.value)
        # and it says what happened: the server (by its address) refused the connection. (The daily
        # register step raises MlflowUnavailable here, "lost the tracking server"; refresh.register is
        # not run under tracking.step, so today it is MLflow's own MlflowException.)
        text = str(mid.value)
        assert isinstance(mid.value, errors.MlflowUnavailable) or (
            mlflow_server.url in text and "Connection refused" in text), repr(mid.value)
    finally:
        monkeypatch.setattr(registry, "like_with_like", real)
        if lost:  # stopped by server_lost: bring it back as it was
            mlflow_server.start()

    # 3. the next retry finds the version the lost attempt registered: one version, one champion
    r = refresh.register(embedded)
    versions = _versions(c)
    assert len(versions) == len(before) + 1, (before, versions)
    assert r["version"] == versions[-1] == lost[0][-1]
    ours = [str(v.version) for v in c.search_model_versions(f"name = '{MODEL}'")
            if v.tags.get("airflow.run_id") == run_key]
    assert ours == [r["version"]]
    mv = c.get_model_version(MODEL, r["version"])
    assert mv.run_id == r["mlflow_run_id"]
    assert mv.tags["pinsage.kind"] == "refresh" and mv.tags["pinsage.parent_version"] == parent
    assert mv.tags["pinsage.promotion"] == ("champion" if r["promoted"] else "rejected")
    runs = c.search_runs([exp], f"tags.`airflow.run_id` = '{run_key}'")
    assert [x.info.run_id for x in runs] == [r["mlflow_run_id"]]  # one MLflow run for the refresh, finished
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["pinsage.model_version"] == r["version"]
    again = refresh.register(embedded)  # a cleared task: still one version, the same decision
    assert (again["version"], again["promoted"]) == (r["version"], r["promoted"])
    assert _versions(c) == versions
    champ = _champion(c)
    assert champ == (r["version"] if r["promoted"] else parent), r["reason"]
    assert c.get_registered_model(MODEL).aliases == {"champion": champ}
    assert [v for v in versions if "champion" in c.get_model_version(MODEL, v).aliases] == [champ]
    if r["promoted"]:
        assert c.get_model_version(MODEL, parent).tags["pinsage.replaced_by"] == r["version"]
