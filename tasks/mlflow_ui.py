"""What a person browsing the MLflow UI sees: datasets, descriptions, sources and tags.

The steps record figures and artifacts; this module makes them readable where people look:

* **datasets** (``mlflow.data``): the run's training interactions and its evaluation pairs, each a
  ``MetaDataset`` whose source is the dataset directory and whose digest is the data's sha256
  (its first 32 hex digits: MLflow caps a digest at 36 characters; the whole sha256 is in the profile
  and in the run tag ``data_sha256``). They are run inputs with the contexts ``training`` and
  ``evaluation``; the evaluation metrics name the evaluation dataset, so the logged model lists it
  under "Datasets used";
* **the logged model**, named after the registered model, created (PENDING) by the evaluate step so
  that the evaluation's metrics are logged once, linked to the run, the model and the evaluation
  dataset; the register step fills it with the recommender (READY) and registers it;
* **source and user** tags, so the run and the logged model say which DAG, task and user made them;
* **descriptions** (``mlflow.note.content``) of the experiment, the run, the registered model and
  each model version, and tags on the experiment and the registered model.
"""

from __future__ import annotations

import getpass
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER

from pinsage.eval.selection import run_best_baseline

DIGEST_CHARS = 32  # MLflow stores at most 36 characters of a dataset digest
NOTE = "mlflow.note.content"
PROJECT_TAGS = {"project": "pinsage", "task": "related-items recommendation",
                "paper": "PinSage, Ying et al., KDD 2018 (arXiv 1806.01973)"}


def _datasets(ref: dict, summary: dict):

    class ProfiledDataset(MetaDataset):
        """A MetaDataset with a profile (MLflow shows it beside the dataset's schema)."""

        def __init__(self, profile: dict, **kwargs):
            self._profile = profile
            super().__init__(**kwargs)

        @property
        def profile(self):
            return self._profile

        def to_dict(self) -> dict[str, str]:
            return dict(super().to_dict(), profile=json.dumps(self._profile))

    data = summary["dataset"]
    sha = ref["data_sha256"]
    name = Path(ref.get("data_path") or data).name
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": all local files
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(data)
    interactions = Schema([ColSpec(DataType.string, "context_id"), ColSpec(DataType.string, "item_id"),
                           ColSpec(DataType.double, "weight", required=False),
                           ColSpec(DataType.long, "timestamp", required=False)])
    pairs = Schema([ColSpec(DataType.string, "query_item_id"), ColSpec(DataType.string, "target_item_id")])
    as_of = summary.get("max_timestamp")
    protocol = summary.get("protocol", "last-item")
    # MLflow keeps one dataset per (name, digest): a run "as of" another time, or under another
    # evaluation protocol, holds other interactions of the same files, so both are part of the name
    when = "" if as_of is None else f", as of {datetime.fromtimestamp(as_of, tz=timezone.utc):%Y-%m-%dT%H:%MZ}"
    training = ProfiledDataset(
        {"items": summary["n_items"], "contexts": summary["n_contexts"],
         "training_interactions": summary["n_train_interactions"], "as_of_timestamp": as_of,
         "has_timestamps": summary.get("has_timestamps"), "sha256": sha},
        source=source, name=f"{name} ({protocol}: training interactions{when})", digest=sha[:DIGEST_CHARS],
        schema=interactions)
    evaluation = ProfiledDataset(
        {"validation_pairs": summary["n_valid_pairs"], "test_pairs": summary["n_test_pairs"],
         "items_ranked": summary["n_items"], "protocol": protocol, "as_of_timestamp": as_of, "sha256": sha},
        source=source, name=f"{name} ({protocol}: evaluation pairs{when})", digest=sha[:DIGEST_CHARS], schema=pairs)
    return {"training": training, "evaluation": evaluation}


def log_datasets(c, ref: dict, summary: dict) -> dict:
    """Log the run's two datasets as inputs; returns ``{context: {"name", "digest"}}`` for the ref."""

    datasets = _datasets(ref, summary)
    run = c.get_run(ref["mlflow_run_id"])
    logged = {(d.dataset.name, d.dataset.digest) for d in (run.inputs.dataset_inputs if run.inputs else [])}
    todo = [DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for context, ds in datasets.items() if (ds.name, ds.digest) not in logged]
    if todo:  # a retried prepare logs nothing twice
        c.log_inputs(ref["mlflow_run_id"], datasets=todo)
    return {context: {"name": ds.name, "digest": ds.digest} for context, ds in datasets.items()}


MODEL_TAG = "pinsage.logged_model_id"


def logged_model(c, run_id: str, *, model_name: str, dag_id: str, run_key: str, user: str | None = None,
                 data_sha256: str = "") -> str:
    """The MLflow run's logged model id: found again (run tag) or created PENDING with the run's params."""

    run = c.get_run(run_id)
    model_id = run.data.tags.get(MODEL_TAG)
    if model_id:
        try:
            return c.get_logged_model(model_id).model_id
        except MlflowException:
            pass  # deleted since: make a new one
    tags = dict(source_tags(dag_id, task="register", user=user), data_sha256=data_sha256)
    tags[NOTE] = (f"The PinSage recommender of {dag_id} run `{run_key}`: network, item embeddings "
                  "and faiss index, with the offline evaluation it was registered on.")
    model = c.create_logged_model(run.info.experiment_id, name=model_name, source_run_id=run_id,
                                  tags=tags, params=dict(run.data.params))
    c.set_tag(run_id, MODEL_TAG, model.model_id)
    return model.model_id


def step_logged_model(c, ref: dict) -> str:
    """:func:`logged_model` of a step's run reference."""
    return logged_model(c, ref["mlflow_run_id"], model_name=ref["settings"]["model_name"], dag_id=ref["dag_id"],
                        run_key=ref["run_key"], user=ref.get("user"), data_sha256=ref.get("data_sha256", ""))


def source_tags(dag_id: str, task: str | None = None, user: str | None = None) -> dict[str, str]:
    """``mlflow.source.*`` and ``mlflow.user``: the Airflow DAG (and task) that made a run or a model."""

    where = f"Airflow DAG {dag_id}" if dag_id != "cli" else "python -m tasks"
    tags = {MLFLOW_SOURCE_NAME: f"{where}, task {task}" if task else where, MLFLOW_SOURCE_TYPE: "JOB"}
    if user:
        tags[MLFLOW_USER] = user
    return tags


def run_user(triggered_by: str | None, run_type: str | None) -> str:
    """Who a run is for: the user who triggered it, the scheduler for scheduled runs, else the shell's user."""
    if triggered_by:
        return triggered_by
    if run_type in ("scheduled", "backfill", "asset_triggered"):
        return "airflow-scheduler"
    return getpass.getuser()


def run_description(ref: dict, summary: dict, settings: dict) -> str:
    data = ref.get("data_path") or summary["dataset"]
    return (f"PinSage retrain of **{Path(data).name}** (`{data}`) by {ref['dag_id']} run "
            f"`{ref['run_key']}`: {summary['n_items']:,} items, {summary['n_train_interactions']:,} training "
            f"interactions, {summary['n_valid_pairs']:,} validation and {summary['n_test_pairs']:,} test pairs. "
            f"Registers a version of `{settings['model_name']}`; the gate decides whether it becomes "
            f"`champion`. Files: `{ref['run_dir']}`.")


def _set_tags(current, set_tag, read_tags, tags: dict[str, str]) -> None:
    """Set the tags whose value differs; a concurrent step setting the same tag first is no error."""

    for k, v in tags.items():
        if current.get(k) == v:
            continue
        try:
            set_tag(k, v)
        except MlflowException:
            if read_tags().get(k) != v:
                raise


def describe_experiment(c, exp_id: str) -> None:
    exp = c.get_experiment(exp_id)
    tags = dict(PROJECT_TAGS)
    if not exp.tags.get(NOTE):
        tags[NOTE] = ("PinSage runs: one MLflow run per Airflow DAG run (`pinsage_daily`), with its parameters, "
                      "per-epoch training curves, offline evaluation against the baselines (MRR, HR@K), the "
                      "report page `report.html` and every artifact. Models are registered versions; the alias "
                      "`champion` marks the one in service.")
    _set_tags(exp.tags, lambda k, v: c.set_experiment_tag(exp_id, k, v),
              lambda: c.get_experiment(exp_id).tags, tags)


def describe_registered_model(c, name: str) -> None:
    rm = c.get_registered_model(name)
    if not rm.description:
        c.update_registered_model(name, description=(
            "PinSage related-items recommender (pyfunc): `predict` on a DataFrame with `item_id` (and an "
            "optional `k`) returns the top-k related items with titles and scores. Each version carries "
            "the network, the item embeddings and the faiss index it was evaluated with. The alias "
            "`champion` marks the version in service: "
            f"`mlflow.pyfunc.load_model('models:/{name}@champion')`."))
    _set_tags(rm.tags, lambda k, v: c.set_registered_model_tag(name, k, v),
              lambda: c.get_registered_model(name).tags,
              dict(PROJECT_TAGS, interface="pyfunc: item_id[, k] -> query_item_id, rank, item_id, title, "
                                           "score, error"))


def version_description(*, promoted: bool, reason: str, metrics: dict, ref: dict, commit: str,
                        report_uri: str | None) -> str:
    """The model version's description: the gate's decision, the figures beside the best baseline."""
    pin_v = metrics.get("validation", {}).get("methods", {}).get("pinsage", {})
    pin_t = metrics.get("methods", {}).get("pinsage", {})

    base = run_best_baseline(metrics)
    base_t = metrics["methods"].get(base, {}) if base else {}
    base_v = metrics.get("validation", {}).get("methods", {}).get(base, {}) if base else {}

    def f(x) -> str:
        return "n/a" if x is None else f"{float(x):.4f}"

    lines = [f"**{'Champion' if promoted else 'Not promoted'}**: {reason}.", "",
             "| | validation MRR | test MRR | test HR@10 |", "|---|---:|---:|---:|",
             f"| PinSage | {f(pin_v.get('mrr'))} | {f(pin_t.get('mrr'))} | {f(pin_t.get('hr@10'))} |"]
    if base:
        lines.append(f"| best baseline ({base}) | {f(base_v.get('mrr'))} | {f(base_t.get('mrr'))} | "
                     f"{f(base_t.get('hr@10'))} |")
    lines += ["", f"{metrics.get('validation', {}).get('n_pairs', 'n/a')} validation and "
                  f"{metrics.get('n_pairs', 'n/a')} test pairs.",
              f"Data sha256 `{ref.get('data_sha256', '')}`; commit `{commit}`; Airflow run "
              f"`{ref['dag_id']}/{ref['run_key']}`."]
    if report_uri:
        lines.append(f"Report: `{report_uri}` (the run's artifact `report.html`).")
    return "\n".join(lines)


def run_link(tracking_uri: str, exp_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI: the tracking server's own, or `mlflow ui`'s default address."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}"

