"""The refresh between retrains: embed the items added since the champion was trained, no training.

    python -m tasks.refresh --data DIR --run-id ID [--model-name pinsage] [--experiment pinsage]

Two steps (the DAG ``pinsage_refresh`` runs them as two tasks):

* :func:`embed` fetches the ``champion`` version's inputs from MLflow (its run's config, catalogue,
  training edges, validation pairs, fitted features and neighbourhoods; the version's network and
  embeddings), finds the items of ``data`` the champion does not know and runs the cold-start path
  (:func:`pinsage.serve.coldstart.embed_new_items`): the champion's fitted word vectors, walks from the new
  items over the graph extended with the contexts that touch them, the export with the champion's
  network. No existing item's embedding moves (``coldstart.json`` records the largest change). With
  no new item it returns ``n_new = 0`` and the DAG skips the rest.
* :func:`register` logs the extended catalogue as the MLflow run's artifacts (the same layout a
  retrain logs, so a refreshed champion can be refreshed again), registers a version tagged
  ``pinsage.kind=refresh`` and ``pinsage.parent_version``, and gates ``champion``: both versions rank
  the champion's own validation pairs (both can answer every one); the refresh may cost at most the
  share ``max_mrr_loss`` (default 2%) of the champion's MRR there (the new items join every ranking,
  so it can only lose), else the alias stays. A failed refresh leaves the champion where it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import mlflow

from pinsage.data.dataset import load_dataset
from pinsage.report import write_report
from pinsage.run.layout import RunDir
from pinsage.run.params import add_arguments, values_from_args
from pinsage.serve.coldstart import embed_new_items
from pinsage.util.io import atomic_dir, atomic_path, write_json
from tasks import mlflow_ui, registry, tracking
from tasks.errors import ConfigError
from tasks.provenance import git_commit
from tasks.runs import run_dir_for, write_step_record
from tasks.settings import build_settings, resolve_data_path
from tasks.step import stage_logger

DAG_ID = "pinsage_refresh"
log = logging.getLogger("pinsage.tasks.refresh")


def run_artifacts(run) -> tuple[Path, ...]:
    """What a refresh needs of the champion's MLflow run (the prepare step logs them), under ``run``."""
    return (run.config, run.summary_file, run.items, run.split("train"), run.split("valid"), run.features,
            run.neighbors_table)


def fetch_champion(c, name: str, base: Path) -> dict:
    """The champion version's inputs as a run directory under ``base``; returns {version, run_id}."""
    champ = registry.champion_version(c, name)
    if champ is None:
        raise ConfigError(f"registered model {name!r} has no 'champion' version to refresh: "
                          "run pinsage_daily first")
    # staged beside ``base`` and swapped in whole (atomic_dir): a failed fetch leaves the last one as it was
    with atomic_dir(base) as tmp, tempfile.TemporaryDirectory() as scratch:
        staged = RunDir(tmp)
        for local in run_artifacts(staged):  # a single file comes down flat: into its own folder
            path = staged.relative(local)
            local.parent.mkdir(parents=True, exist_ok=True)
            got = Path(mlflow.artifacts.download_artifacts(run_id=champ.run_id, artifact_path=path,
                                                           dst_path=str(local.parent)))
            if not got.exists():
                raise FileNotFoundError(f"champion version {champ.version}: run {champ.run_id} has no artifact "
                                        f"{path!r} (registered before refreshes were possible?)")
        for artifact, dest in (("model_dir", staged.export_model), ("embeddings", staged.embeddings)):
            got = registry.version_artifact(f"models:/{name}/{champ.version}", artifact, scratch)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(got), dest)
    return {"version": str(champ.version), "run_id": champ.run_id}


def embed(params: dict, *, run_key: str, dag_id: str = DAG_ID) -> dict:
    """Fetch the champion, find the new items of ``params['data']``, embed them. See the module docstring."""
    settings = build_settings(params)
    data = resolve_data_path(params.get("data") or "data/ml-latest-small")
    run_dir = run_dir_for(dag_id, run_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    c = tracking.client()
    champion = RunDir(run_dir / "champion")
    parent = fetch_champion(c, settings["model_name"], champion.root)
    known = set(champion.item_ids())
    items = load_dataset(data).items
    n_new = int((~items["item_id"].isin(known)).sum())
    result = {"run_key": run_key, "dag_id": dag_id, "run_dir": str(run_dir), "data": data, "settings": settings,
              "parent_version": parent["version"], "parent_run_id": parent["run_id"], "n_new": n_new}
    if n_new:
        out = RunDir(run_dir / "refresh")
        if out.root.exists():  # a retry starts over: nothing of a half refresh is kept
            shutil.rmtree(out.root)
        summary = embed_new_items(champion.root, data, out.root, log=stage_logger("refresh"))
        # the layout a retrain logs, so this version can itself be refreshed later
        cfg = champion.config_dict()
        cfg.update(data=data, out=str(out.root))
        write_json(out.config, cfg)
        copies = [(champion.split(split), out.split(split)) for split in ("train", "valid")]
        if champion.word_vectors.exists():  # the fitted transform travels on
            copies.append((champion.word_vectors, out.word_vectors))
        for src, dst in copies:
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
        with atomic_dir(out.export_model) as tmp:
            shutil.copytree(champion.export_model, tmp, dirs_exist_ok=True)
        result.update(out=str(out.root), max_abs_change_existing=summary["max_abs_change_existing"],
                      new_item_ids=summary["new_item_ids"][:20], seconds=summary["seconds"])
    write_step_record(result, "refresh_embed", result)
    return result


def register(embedded: dict) -> dict:
    """Log, register and gate the refreshed catalogue. See the module docstring."""
    settings, out = embedded["settings"], RunDir(embedded["out"])
    name = settings["model_name"]
    c = tracking.client()
    exp_id = tracking.experiment_id(c, settings["experiment"])
    tags = {"airflow.dag_id": embedded["dag_id"], "airflow.run_id": embedded["run_key"],
            "mlflow.runName": embedded["run_key"][:250], "pinsage.kind": "refresh",
            "pinsage.parent_version": embedded["parent_version"], "git_commit": git_commit()}
    rid = tracking.find_or_create_run(c, exp_id, embedded["dag_id"], embedded["run_key"], tags)
    c.set_tag(rid, mlflow_ui.NOTE, f"Refresh of `{name}` version {embedded['parent_version']} without retraining: "
                                f"{embedded['n_new']} new items embedded with its network; no existing item's "
                                "embedding moved.")
    # a lost server is the retryable MlflowUnavailable, and the run is marked FAILED, like the daily steps
    with tracking.step({"mlflow_run_id": rid}, "refresh_register") as c:
        write_report(out)  # the new items and their related items, beside the popular and long-tail ones
        for path in (out.config, out.coldstart, out.report):
            tracking.log_artifacts(c, rid, path)
        for d in (out.prepare, out.features, out.neighbors, out.embeddings, out.index):
            tracking.log_artifacts(c, rid, d, out.relative(d))
        mv = registry.register_version(c, name, rid, mlflow_ui.logged_model(
            c, rid, model_name=name, dag_id=embedded["dag_id"], run_key=embedded["run_key"]), out, tags={
                "pinsage.promotion": "candidate", "pinsage.kind": "refresh",
                "pinsage.parent_version": embedded["parent_version"], "pinsage.new_items": str(embedded["n_new"]),
                "airflow.dag_id": embedded["dag_id"], "airflow.run_id": embedded["run_key"]},
            example_item_id=embedded["new_item_ids"][0])
        version = str(mv.version)
        champ = registry.champion_version(c, name)
        same = registry.like_with_like(out.root, name, champ) if champ is not None else None  # the champion's own pairs
        loss = settings["max_mrr_loss"] * (same["champion"] if same and math.isfinite(same["champion"]) else 0.0)
        # the gate takes these scores as they are while that version is still champion (no second download)
        promoted, reason = registry.gate(c, name, version, same["candidate"] if same else math.nan, -loss, out.root,
                                scored=None if same is None else (str(champ.version), same),
                                parent=embedded["parent_version"])  # refused if the champion moved meanwhile
        c.update_model_version(name, version, description=(
            f"Refresh of version {embedded['parent_version']}: {embedded['n_new']} new items embedded without "
            f"retraining (existing items' embeddings unchanged). Gate: {reason}"))
        c.set_tag(rid, "pinsage.model_version", version)
        c.set_tag(rid, "pinsage.promoted", str(promoted).lower())
        c.set_terminated(rid, status="FINISHED")
    result = {"model_name": name, "version": version, "model_uri": f"models:/{name}/{version}",
              "promoted": promoted, "reason": reason, "parent_version": embedded["parent_version"],
              "mlflow_run_id": rid,  # XCom is JSON: no NaN in it
              "validation_mrr": same["candidate"] if same and math.isfinite(same["candidate"]) else None}
    write_step_record(embedded, "refresh_register", result)
    return result


def main(argv=None) -> int:

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the dataset with the added items (and any interactions)")
    p.add_argument("--run-id", required=True, help="a name for this refresh (its run directory and MLflow run)")
    add_arguments(p, only=("model_name", "experiment", "max_mrr_loss"))  # the table's rows, as the DAG form
    args = p.parse_args(argv)
    embedded = embed({"data": args.data, **values_from_args(args)}, run_key=args.run_id, dag_id="cli")
    result = register(embedded) if embedded["n_new"] else {"n_new": 0, "note": "no new item: nothing registered"}
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
