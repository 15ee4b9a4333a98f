"""MLflow: the tracking store, one run per DAG run, idempotent logging, a step's status on its run.

Environment:
    MLFLOW_TRACKING_URI            default ``sqlite:///<repo>/.pinsage/mlflow.db``
    PINSAGE_MLFLOW_ARTIFACT_ROOT   artifact root for experiments this code creates on a local store
                                   (default ``<repo>/.pinsage/mlartifacts`` when the tracking URI
                                   is a local sqlite/file store; a tracking server manages its own)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import mlflow
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tasks.errors import ConfigError, MlflowUnavailable
from tasks.redact import redact, redact_obj
from tasks.runs import STATE_DIR, safe_name

log = logging.getLogger("pinsage.tasks")


def configure_mlflow() -> str:
    """Default the tracking URI to the project's local SQLite store; return the URI in use."""

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{STATE_DIR / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ.setdefault("PINSAGE_MLFLOW_ARTIFACT_ROOT", str(STATE_DIR / "mlartifacts"))
    mlflow.set_tracking_uri(uri)
    return uri


def check_tracking_server(uri: str | None = None, timeout: float = 10.0) -> None:
    """For an HTTP tracking URI, one quick ``/health`` request; MlflowUnavailable if it fails.

    Without it a step would spend MLflow's request retries (minutes) before failing with a long
    urllib3 message; this fails fast and says what to do. Local stores (sqlite, file) are not checked.
    """
    uri = uri or configure_mlflow()
    if not uri.startswith(("http://", "https://")):
        return

    try:
        r = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        reason = type(err).__name__
        if isinstance(err, requests.ConnectionError):
            reason = "connection refused or host down"
        elif isinstance(err, requests.Timeout):
            reason = f"no answer within {timeout:g}s"
        raise MlflowUnavailable(
            f"MLflow tracking server {redact(uri)} is unreachable ({reason}); start it or fix "
            "MLFLOW_TRACKING_URI. Nothing was registered; the step can be retried as is") from None
    if r.status_code >= 500:
        raise MlflowUnavailable(f"MLflow tracking server {redact(uri)} is unhealthy (HTTP {r.status_code} on "
                                "/health); the step can be retried as is")


def client():

    check_tracking_server(configure_mlflow())
    return MlflowClient()


def is_connection_error(err: BaseException) -> bool:
    """Does ``err`` (or its cause) say the tracking server could not be reached?"""
    seen = 0
    while err is not None and seen < 10:
        text = f"{type(err).__name__}: {err}"
        if isinstance(err, (ConnectionError, TimeoutError)) or any(s in text for s in (
                "Max retries exceeded", "Connection refused", "ConnectionError", "Failed to establish",
                "RemoteDisconnected", "Connection aborted", "Read timed out")):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    root = os.environ.get("PINSAGE_MLFLOW_ARTIFACT_ROOT")
    if root is None and _local_store(configure_mlflow()):
        root = str(STATE_DIR / "mlartifacts")
    if root:
        location = str(Path(root).resolve() / safe_name(name)) if "://" not in root else f"{root}/{name}"
    try:
        return c.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another step
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_or_create_run(c, exp_id: str, dag_id: str, run_key: str, tags: dict) -> str:
    """One MLflow run per (DAG id, run id): a retried or cleared step finds the same run."""
    found = c.search_runs([exp_id], filter_string=f"tags.`airflow.dag_id` = '{sql_quote(dag_id)}' and "
                                                  f"tags.`airflow.run_id` = '{sql_quote(run_key)}'",
                          max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    run = c.create_run(exp_id, run_name=run_key[:250], tags=tags)
    return run.info.run_id


def sql_quote(s: str) -> str:
    return str(s).replace("\\", "\\\\").replace("'", "\\'")


def log_params(c, run_id: str, params: dict[str, str]) -> None:

    existing = c.get_run(run_id).data.params
    changed = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v[:6000]}
    if changed:
        raise ConfigError(f"MLflow run {run_id} was started with different parameters {changed}; "
                          "a DAG run's configuration cannot change -- trigger a new run")
    new = [Param(k, v[:6000]) for k, v in params.items() if k not in existing]
    for s in range(0, len(new), 100):
        c.log_batch(run_id, params=new[s:s + 100])


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int = 0, dataset: dict | None = None,
                model_id: str | None = None) -> None:
    """Log values not already recorded at this step (a retried step adds no duplicate points).

    ``model_id`` (a logged model) and ``dataset`` (``{"name", "digest"}`` of a dataset logged as the
    run's input) link the values to the model and the data they were measured on, as MLflow's UI
    shows them on the model's page.
    """

    now = int(time.time() * 1000)
    link = {"dataset_name": dataset["name"], "dataset_digest": dataset["digest"]} if dataset else {}
    if model_id:
        link.update(model_id=model_id, run_id=run_id)
    todo = []
    for k, v in metrics.items():
        if any(m.step == step and (m.value == v or (math.isnan(m.value) and math.isnan(v)))
               for m in c.get_metric_history(run_id, k)):
            continue
        todo.append(Metric(k, float(v), now, step, **link))
    for s in range(0, len(todo), 500):
        c.log_batch(run_id, metrics=todo[s:s + 500])


def log_json_redacted(c, run_id: str, name: str, obj: dict, artifact_path: str | None = None) -> None:
    """Log ``obj`` as the artifact ``name`` with secrets hidden (the run directory keeps the original)."""

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_text(json.dumps(redact_obj(obj), indent=2) + "\n")
        c.log_artifact(run_id, str(path), artifact_path)


def log_artifacts(c, run_id: str, local: str | Path, artifact_path: str | None = None) -> None:
    """A file or a whole directory; re-logging replaces the same names (idempotent)."""
    local = Path(local)
    if local.is_dir():
        c.log_artifacts(run_id, str(local), artifact_path)
    else:
        c.log_artifact(run_id, str(local), artifact_path)


@contextlib.contextmanager
def step(ref: dict, name: str) -> Iterator[Any]:
    """Mark the MLflow run as working on ``name``; on failure record it and mark the run FAILED.

    A retry of the step sets the run back to RUNNING. Yields the MLflow client.
    """
    c = client()
    rid = ref["mlflow_run_id"]
    c.update_run(rid, status="RUNNING")
    c.set_tag(rid, "pinsage.step", name)
    t0 = time.perf_counter()
    try:
        yield c
    except BaseException as err:
        if is_connection_error(err) and not isinstance(err, MlflowUnavailable):
            try:
                check_tracking_server()
            except MlflowUnavailable as down:  # cannot mark the run: say what happened instead
                raise MlflowUnavailable(f"step {name!r} lost the tracking server: {down}") from err
        with contextlib.suppress(Exception):
            c.set_tag(rid, "pinsage.failed_step", name)
            c.set_tag(rid, "pinsage.error", redact(f"{type(err).__name__}: {err}")[:4000])
            c.set_terminated(rid, status="FAILED")
        raise
    run = c.get_run(rid)
    if run.data.tags.get("pinsage.failed_step") == name:
        c.delete_tag(rid, "pinsage.failed_step")
        c.delete_tag(rid, "pinsage.error")
    log.info("%s done in %.1fs", name, time.perf_counter() - t0)
