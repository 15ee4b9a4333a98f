"""What every step shares: run references, configuration from form parameters, the MLflow run.

A *run reference* (``ref``) is the small dict a DAG run hands from step to step (through XCom, or
``<run_dir>/run.json`` on the command line)::

    {"run_key": "manual__2025-01-01T00:00:00+00:00", "dag_id": "pinsage_daily",
     "run_dir": "/abs/.pinsage/runs/pinsage_daily/manual__2025-01-01T00-00-00-00-00",
     "config": "<run_dir>/config.json", "mlflow_run_id": "…", "experiment_id": "…",
     "settings": {"model_name": "pinsage", "promotion_margin": 0.0, "engine": "local", …}}

Environment:
    MLFLOW_TRACKING_URI            default ``sqlite:///<repo>/.pinsage/mlflow.db``
    PINSAGE_MLFLOW_ARTIFACT_ROOT   artifact root for experiments this code creates on a local store
                                   (default ``<repo>/.pinsage/mlartifacts`` when the tracking URI
                                   is a local sqlite/file store; a tracking server manages its own)
    PINSAGE_RUNS_DIR               where run directories live (default ``<repo>/.pinsage/runs``)
    PINSAGE_DATA_ROOT              base for relative dataset paths (default: the repository root)
    PINSAGE_GIT_COMMIT             commit to record when the code is not a git checkout (images)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".pinsage"
RUN_JSON = "run.json"

log = logging.getLogger("pinsage.tasks")

# Form parameters of the DAG (and of ``python -m tasks.prepare``) -> PipelineConfig fields.
FORM_FIELDS: dict[str, str] = {
    "epochs": "train.epochs",
    "hidden_dim": "model.hidden_dim",
    "output_dim": "model.output_dim",
    "top_t": "walks.top_t",
    "walks_per_item": "walks.walks_per_item",
    "learning_rate": "train.learning_rate",
    "device": "train.device",
    "training_processes": "train.nproc",
    "precision": "train.precision",
    "vgg_weights": "features.vgg_weights",
    "engine": "engine",
    "ray_address": "ray_address",
    "protocol": "protocol",
}
# Run-level settings that are not part of PipelineConfig.
SETTINGS_DEFAULTS: dict[str, Any] = {
    "model_name": "pinsage",
    "experiment": "pinsage",
    "promotion_margin": 0.0,
    "engine": "local",
    "ray_address": None,
}
ENGINES = ("local", "ray")


class ConfigError(ValueError):
    """A parameter or override that can never work: retrying the step will not help."""


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached: transient, so the orchestrator retries the step."""


def permanent_errors() -> tuple[type[BaseException], ...]:
    """Exceptions an orchestrator should not retry (bad data, bad parameters, unimplemented engine)."""
    from pinsage.dataset import DatasetError
    from pinsage.params import ParamError

    return (DatasetError, ConfigError, ParamError, NotImplementedError)


def param_name(key: str) -> str:
    """A PipelineConfig key as the user wrote it: the DAG parameter, else the ``overrides`` key."""
    if key in ("seed", "train.seed", "walks.seed", "features.seed"):
        return "DAG parameter 'seed'"
    if key in ("max_timestamp", "engine", "protocol"):
        return f"DAG parameter {key!r}"
    form = {v: k for k, v in FORM_FIELDS.items()}.get(key)
    return f"DAG parameter {form!r} ({key})" if form else f"override {key!r}"


def config_error(err) -> ConfigError:
    """A :class:`pinsage.params.ParamError` as a ConfigError naming the DAG parameter."""
    out = ConfigError(f"{param_name(err.param)}: {err.message}")
    out.param = err.param
    return out


# ---------------------------------------------------------------------------------------------
# Configuration

def resolve_data_path(data: str) -> str:
    p = Path(os.path.expanduser(str(data)))
    if not p.is_absolute():
        p = Path(os.environ.get("PINSAGE_DATA_ROOT") or REPO_ROOT) / p
    return str(p.resolve())


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    node = d
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config key {key!r}")
        node = node[part]
    leaf = parts[-1]
    if leaf not in node or isinstance(node[leaf], dict):
        raise ConfigError(f"unknown config key {key!r}")
    old = node[leaf]
    if old is not None and value is not None:
        if isinstance(old, bool):
            ok = isinstance(value, bool)
        elif isinstance(old, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(old, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ConfigError(f"config key {key!r} expects {type(old).__name__}, got {value!r}")
    node[leaf] = value


def build_config(params: dict, out: str | Path, max_timestamp: int | None = None):
    """PipelineConfig from the form parameters (see FORM_FIELDS) and dotted ``overrides``.

    ``overrides`` maps dotted PipelineConfig keys to values, e.g.
    ``{"features.word2vec_dim": 16, "train.sampler.batch_size": 64}``.
    """
    from pinsage.pipeline import PipelineConfig

    cfg = PipelineConfig(data=resolve_data_path(params.get("data") or "data/ml-latest-small"),
                         out=str(out), max_timestamp=max_timestamp)
    cfg = cfg.with_seed(int(params.get("seed") or 0))
    d = cfg.to_dict()
    for name, key in FORM_FIELDS.items():
        if params.get(name) is not None:
            _set_dotted(d, key, params[name])
    overrides = dict(params.get("overrides") or {})
    for key, value in overrides.items():
        if key in ("data", "out", "max_timestamp"):
            raise ConfigError(f"override {key!r} through its own parameter")
        _set_dotted(d, key, value)
    from pinsage.params import ParamError, check_config

    cfg = PipelineConfig.from_dict(d)
    try:
        check_config(cfg)
    except ParamError as err:
        raise config_error(err) from None
    return cfg


def build_settings(params: dict) -> dict:
    s = {k: params.get(k, v) if params.get(k) is not None else v for k, v in SETTINGS_DEFAULTS.items()}
    s["promotion_margin"] = float(s["promotion_margin"])
    if not (s["promotion_margin"] >= 0 and math.isfinite(s["promotion_margin"])):
        raise ConfigError(f"promotion_margin must be a finite number >= 0, got {s['promotion_margin']}")
    if s["engine"] not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {s['engine']!r}")
    return s


def load_config(ref: dict):
    from pinsage.pipeline import PipelineConfig

    return PipelineConfig.from_dict(json.loads(Path(ref["config"]).read_text()))


SECRET_KEY = re.compile(r"(^|[._-])(password|passwd|pwd|secret|token|credentials?|api_?key|private_?key)($|[._-])", re.I)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^/@\s]+)@")


def redact(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` in ``text``."""
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))


def redact_obj(obj):
    """A JSON-like object with secret-looking keys and URL passwords hidden (for logged copies)."""
    if isinstance(obj, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) and v not in (None, "") else redact_obj(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v) for v in obj]
    return redact(obj) if isinstance(obj, str) else obj


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Flattened ``{dotted key: str}`` for MLflow params; secret-looking keys and URL passwords hidden."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif SECRET_KEY.search(k) and v not in (None, ""):
            out[key] = "***"
        else:
            out[key] = redact("None" if v is None else str(v))
    return out


def safe_name(run_key: str) -> str:
    """A run id as a directory name: ``manual__2025-01-01T00:00:00+00:00`` -> ``manual__2025-01-01T00-00-00-00-00``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_key).strip(".-")
    if not name:
        raise ValueError(f"run id {run_key!r} has no usable characters")
    return name[:200]


def runs_dir() -> Path:
    return Path(os.environ.get("PINSAGE_RUNS_DIR") or STATE_DIR / "runs").resolve()


def run_dir_for(dag_id: str, run_key: str) -> Path:
    return runs_dir() / safe_name(dag_id) / safe_name(run_key)


def git_commit() -> str:
    env = os.environ.get("PINSAGE_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Run references and step records

def read_ref(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m tasks.prepare` first")
    return json.loads(path.read_text())


def step_record_path(ref: dict, step: str) -> Path:
    return Path(ref["run_dir"]) / "steps" / f"{step}.json"


def write_step_record(ref: dict, step: str, result: dict) -> None:
    from pinsage.io import write_json

    write_json(step_record_path(ref, step), result)


def read_step_record(ref: dict, step: str) -> dict:
    path = step_record_path(ref, step)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run step {step!r} first")
    return json.loads(path.read_text())


def require(path: str | Path, what: str) -> Path:
    """An input handed by an upstream step must exist (fail fast with a clear message)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist: has the upstream step run?")
    return p


def same_path(handed: str | Path, expected: Path, what: str) -> Path:
    """The pinsage stages read the run directory's layout; a handed path must be that layout's."""
    h = require(handed, what).resolve()
    if h != Path(expected).resolve():
        raise ValueError(f"{what} {h} is not the run directory's {expected}")
    return h


# ---------------------------------------------------------------------------------------------
# MLflow

def configure_mlflow() -> str:
    """Default the tracking URI to the project's local SQLite store; return the URI in use."""
    import mlflow

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
    import requests

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
    from mlflow import MlflowClient

    check_tracking_server(configure_mlflow())
    return MlflowClient()


def _is_connection_error(err: BaseException) -> bool:
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
    from mlflow.entities import Param

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
    from mlflow.entities import Metric

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
    import tempfile

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
        if _is_connection_error(err) and not isinstance(err, MlflowUnavailable):
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


def stage_logger(name: str):
    lg = logging.getLogger(f"pinsage.tasks.{name}")
    return lambda message: lg.info("%s", message)


# ---------------------------------------------------------------------------------------------
# Command lines

def cli_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--run-dir", required=True, help="run directory written by `python -m tasks.prepare`")
    return p


def cli_main(run_fn, parser: argparse.ArgumentParser, argv=None, **kwargs_from_args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = parser.parse_args(argv)
    ref = read_ref(args.run_dir)
    kwargs = {k: fn(args, ref) for k, fn in kwargs_from_args.items()}
    result = run_fn(ref, **{k: v for k, v in kwargs.items() if v is not None})
    print(json.dumps(result, indent=2))
    return 0
