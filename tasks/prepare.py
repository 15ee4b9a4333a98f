"""Step 1, prepare: open the run (directory, config, MLflow run), validate and split the data.

    python -m tasks.prepare --data data/ml-latest-small --run-id try1 [--epochs 2 ...] [--params p.json]
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path

from . import browse, common


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
    :mod:`tasks.browse`). Returns the run reference every later step takes.
    """
    from pinsage import pipeline
    from pinsage.dataset import data_fingerprint
    from pinsage.io import write_json
    from pinsage.params import ParamError

    settings = common.build_settings(params)
    max_ts = resolve_max_timestamp(params, run_type, data_interval_end)
    run_dir = common.run_dir_for(dag_id, run_key)
    cfg = common.build_config(params, run_dir, max_ts)

    c = common.client()
    exp_id = common.experiment_id(c, settings["experiment"])
    commit = common.git_commit()
    tags = {"airflow.dag_id": dag_id, "airflow.run_id": run_key,
            "airflow.logical_date": str(logical_date) if logical_date else "",
            "airflow.run_type": run_type or "", "git_commit": commit, "mlflow.source.git.commit": commit,
            "pinsage.engine": settings["engine"], "mlflow.runName": run_key[:250]}
    ref = {"run_key": run_key, "dag_id": dag_id, "run_dir": str(run_dir),
           "config": str(run_dir / "config.json"), "experiment_id": exp_id, "settings": settings,
           "data_path": cfg.data, "user": browse.run_user(triggered_by, run_type)}
    tags.update(browse.source_tags(ref, user=ref["user"]))
    browse.describe_experiment(c, exp_id)
    mlflow_run_id = common.find_or_create_run(c, exp_id, dag_id, run_key, tags)
    ref["mlflow_run_id"] = mlflow_run_id
    write_json(run_dir / "config.json", cfg.to_dict())
    write_json(run_dir / common.RUN_JSON, ref)

    with common.step(ref, "prepare") as c:
        for k, v in tags.items():
            c.set_tag(mlflow_run_id, k, v)
        c.set_tag(mlflow_run_id, "pinsage.run_dir", str(run_dir))
        params_flat = common.flat_params(cfg.to_dict())
        params_flat.pop("out")
        params_flat.update({f"settings.{k}": common.redact(str(v)) for k, v in settings.items()})
        common.log_params(c, mlflow_run_id, params_flat)
        try:
            out = pipeline.prepare(cfg, log=common.stage_logger("prepare"))
        except ParamError as err:  # e.g. top_t larger than the catalogue: name the DAG parameter
            raise common.config_error(err) from None
        summary = json.loads((run_dir / "prepare" / "summary.json").read_text())
        fingerprint = data_fingerprint(summary["dataset"])
        c.set_tag(mlflow_run_id, "data_sha256", fingerprint)
        c.set_tag(mlflow_run_id, "data_max_timestamp", "" if max_ts is None else str(max_ts))
        c.set_tag(mlflow_run_id, "data_path", cfg.data)
        ref["data_sha256"] = fingerprint
        # the data's counts are the datasets' profiles, not single-point metrics
        datasets = browse.log_datasets(c, ref, summary)
        c.set_tag(mlflow_run_id, browse.NOTE, browse.run_description(ref, summary, settings))
        common.log_json_redacted(c, mlflow_run_id, "config.json", cfg.to_dict())
        # the catalogue, training edges and validation pairs: what a refresh of this version starts from
        for name in ("summary.json", "items.parquet", "train.parquet", "valid.parquet"):
            common.log_artifacts(c, mlflow_run_id, run_dir / "prepare" / name, "prepare")
    ref = dict(ref, datasets=datasets, prepare_dir=out["prepare_dir"])
    write_json(run_dir / common.RUN_JSON, ref)
    common.write_step_record(ref, "prepare", ref)
    return ref


def add_param_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="dataset directory (default: bundled ml-latest-small)")
    p.add_argument("--params", default=None, help="JSON file of DAG-style parameters (the options below win)")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--hidden-dim", type=int)
    p.add_argument("--output-dim", type=int)
    p.add_argument("--top-t", type=int)
    p.add_argument("--walks-per-item", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--promotion-margin", type=float)
    p.add_argument("--model-name")
    p.add_argument("--experiment")
    p.add_argument("--max-timestamp", type=int)
    p.add_argument("--protocol", choices=["tail", "last-item"])
    p.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                   help="dotted PipelineConfig key, e.g. features.word2vec_dim=16 (repeatable)")


def params_from_args(args) -> dict:
    params = json.loads(Path(args.params).read_text()) if args.params else {}
    for name in ("data", "seed", "epochs", "hidden_dim", "output_dim", "top_t", "walks_per_item",
                 "learning_rate", "device", "promotion_margin", "model_name", "experiment", "max_timestamp",
                 "protocol"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    overrides = dict(params.get("overrides") or {})
    for item in args.override:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    params["overrides"] = overrides
    return params


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
