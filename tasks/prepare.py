"""Step 1, prepare: open the run (directory, config, MLflow run), validate and split the data.

    python -m tasks.prepare --data data/ml-latest-small --run-id try1 [--epochs 2 ...] [--params p.json]

The flags are the parameter table's (:mod:`pinsage.run.params`), the same as the DAG form's fields.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path

from pinsage import pipeline
from pinsage.data.dataset import data_fingerprint
from pinsage.run.layout import RunDir
from pinsage.run.params import ParamError, add_arguments, values_from_args
from pinsage.util.io import write_json
from tasks import mlflow_ui, tracking
from tasks.errors import config_error
from tasks.provenance import git_commit
from tasks.redact import flat_params, redact
from tasks.runs import RUN_JSON, run_dir_for, write_step_record
from tasks.settings import build_config, build_settings
from tasks.step import stage_logger


def resolve_max_timestamp(params: dict, run_type: str | None, data_interval_end) -> int | None:
    """What "as of" the run trains.

    An explicit ``max_timestamp`` parameter wins. Otherwise a scheduled (or backfill) run sees the
    interactions up to its data interval's end, so a backfill of a past date reproduces what that
    day's run saw; a triggered run sees all the data.
    """
    if params.get("max_timestamp") is not None:
        return int(params["max_timestamp"])
    if run_type in ("scheduled", "backfill") and data_interval_end is not None:
        if isinstance(data_interval_end, str):
            data_interval_end = datetime.fromisoformat(data_interval_end)
        return int(data_interval_end.timestamp())
    return None


def run(params: dict, *, run_key: str, dag_id: str = "cli", logical_date: str | None = None,
        run_type: str | None = None, data_interval_end=None, triggered_by: str | None = None) -> dict:
    """Create (or find again) the run, write ``config.json`` and ``run.json``, run ``prepare``.

    Logs the training and evaluation data as the run's MLflow datasets and describes the run (see
    :mod:`tasks.mlflow_ui`). Returns the run reference every later step takes.
    """

    settings = build_settings(params)
    max_ts = resolve_max_timestamp(params, run_type, data_interval_end)
    run = RunDir(run_dir_for(dag_id, run_key))
    run_dir = run.root
    cfg = build_config(params, run_dir, max_ts)

    c = tracking.client()
    exp_id = tracking.experiment_id(c, settings["experiment"])
    commit = git_commit()
    tags = {"airflow.dag_id": dag_id, "airflow.run_id": run_key,
            "airflow.logical_date": str(logical_date) if logical_date else "",
            "airflow.run_type": run_type or "", "git_commit": commit, "mlflow.source.git.commit": commit,
            "pinsage.engine": cfg.engine, "mlflow.runName": run_key[:250]}
    ref = {"run_key": run_key, "dag_id": dag_id, "run_dir": str(run_dir),
           "config": str(run.config), "experiment_id": exp_id, "settings": settings,
           "data_path": cfg.data, "user": mlflow_ui.run_user(triggered_by, run_type)}
    tags.update(mlflow_ui.source_tags(ref["dag_id"], user=ref["user"]))
    mlflow_ui.describe_experiment(c, exp_id)
    mlflow_run_id = tracking.find_or_create_run(c, exp_id, dag_id, run_key, tags)
    ref["mlflow_run_id"] = mlflow_run_id
    write_json(run.config, cfg.to_dict())
    write_json(run_dir / RUN_JSON, ref)

    with tracking.step(ref, "prepare") as c:
        for k, v in tags.items():
            c.set_tag(mlflow_run_id, k, v)
        c.set_tag(mlflow_run_id, "pinsage.run_dir", str(run_dir))
        params_flat = flat_params(cfg.to_dict())
        params_flat.pop("out")
        params_flat.update({f"settings.{k}": redact(str(v)) for k, v in settings.items()})
        tracking.log_params(c, mlflow_run_id, params_flat)
        try:
            out = pipeline.prepare(cfg, log=stage_logger("prepare"))
        except ParamError as err:  # e.g. top_t larger than the catalogue: name the DAG parameter
            raise config_error(err) from None
        summary = run.summary()
        fingerprint = data_fingerprint(summary["dataset"])
        c.set_tag(mlflow_run_id, "data_sha256", fingerprint)
        c.set_tag(mlflow_run_id, "data_max_timestamp", "" if max_ts is None else str(max_ts))
        c.set_tag(mlflow_run_id, "data_path", cfg.data)
        ref["data_sha256"] = fingerprint
        # the data's counts are the datasets' profiles, not single-point metrics
        datasets = mlflow_ui.log_datasets(c, ref, summary)
        c.set_tag(mlflow_run_id, mlflow_ui.NOTE, mlflow_ui.run_description(ref, summary, settings))
        tracking.log_json_redacted(c, mlflow_run_id, "config.json", cfg.to_dict())
        # the catalogue, training edges and validation pairs: what a refresh of this version starts from
        for path in (run.summary_file, run.items, run.split("train"), run.split("valid")):
            tracking.log_artifacts(c, mlflow_run_id, path, "prepare")
    ref = dict(ref, datasets=datasets, prepare_dir=out["prepare_dir"])
    write_json(run_dir / RUN_JSON, ref)
    write_step_record(ref, "prepare", ref)
    return ref


def add_param_arguments(p: argparse.ArgumentParser) -> None:
    """The table's flags (run settings included) and ``--params FILE`` of DAG-style parameters."""

    p.add_argument("--params", default=None, help="JSON file of DAG-style parameters (the flags win)")
    add_arguments(p, settings=True)


def params_from_args(args) -> dict:

    params = json.loads(Path(args.params).read_text()) if args.params else {}
    given = values_from_args(args)
    overrides = {**dict(params.get("overrides") or {}), **given.pop("overrides", {})}
    return {**params, **given, "overrides": overrides}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True, help="names the run directory and the MLflow run")
    add_param_arguments(p)
    args = p.parse_args(argv)
    ref = run(params_from_args(args), run_key=args.run_id, dag_id="cli", run_type="manual")
    print(json.dumps(ref, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
