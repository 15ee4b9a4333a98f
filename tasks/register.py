"""Step 9, register: log the recommender, register a model version, and gate the ``champion`` alias.

The version's artifacts are exactly what was evaluated: the model fetched from the handed
``model_uri``, the embeddings exported from it and the index built over them (checked through their
``source.json``). The version is tagged ``pinsage.promotion=candidate`` when it is created; then the
gate (``tasks.registry``: like with like, one gate at a time, a retry keeps its decision) moves
``champion`` to it or tags why not. Re-running the step finds the version it already registered for
this MLflow run (no duplicate).

    python -m tasks.register --run-dir RUN_DIR
"""

from __future__ import annotations

from pinsage.util.io import sha256_file
from tasks import mlflow_ui, registry
from tasks.runs import read_step_record, require, step_record_path
from tasks.step import main_for, stage_step


def run(ref: dict, model_uri: str | None = None, embeddings_dir: str | None = None,
        index_dir: str | None = None, metrics: str | None = None) -> dict:
    settings = ref["settings"]
    name, margin = settings["model_name"], float(settings["promotion_margin"])
    if model_uri is None or index_dir is None or embeddings_dir is None:
        rec = read_step_record(ref, "index")
        model_uri, index_dir = model_uri or rec["model_uri"], index_dir or rec["index_dir"]
        embeddings_dir = embeddings_dir or rec["embeddings_dir"]

    checked: dict = {}

    def same_model(s) -> None:  # the embeddings and the index come from the handed model
        sha = checked["model_sha256"] = sha256_file(require(s.run.export_model / "model.pt", "exported model"))
        registry.check_source(s.run.embeddings, "embeddings", model_uri, sha)
        registry.check_source(s.run.index, "index", model_uri, sha)

    with stage_step(ref, "register", handed={"embeddings": embeddings_dir, "index": index_dir,
                                             "metrics": metrics}, check=same_model) as s:
        c, rid, rundir = s.client, s.mlflow_run_id, s.run
        m = rundir.read_json(rundir.metrics)
        validation_mrr = registry.as_mrr(m.get("validation", {}).get("methods", {}).get("pinsage", {}).get("mrr"))
        test_mrr = registry.as_mrr(m.get("methods", {}).get("pinsage", {}).get("mrr"))
        commit = c.get_run(rid).data.tags.get("git_commit", "")
        # the logged model was created by evaluate, with the evaluation's metrics
        mv = registry.register_version(c, name, rid, mlflow_ui.step_logged_model(c, ref), rundir, tags={
            "pinsage.promotion": "candidate", "validation_mrr": f"{validation_mrr:.4f}",
            "test_mrr": f"{test_mrr:.4f}", "model_sha256": checked["model_sha256"], "source_model_uri": model_uri,
            "data_sha256": ref.get("data_sha256", ""), "airflow.dag_id": ref["dag_id"],
            "airflow.run_id": ref["run_key"], "git_commit": commit}, example_item_id=str(rundir.item_ids()[0]))
        version = str(mv.version)
        promoted, reason = registry.gate(c, name, version, validation_mrr, margin, rundir.root)
        report = (f"{c.get_run(rid).info.artifact_uri}/report.html"
                  if step_record_path(ref, "evaluate").is_file()
                  and read_step_record(ref, "evaluate").get("report") else None)
        c.update_model_version(name, version, description=mlflow_ui.version_description(
            promoted=promoted, reason=reason, metrics=m, ref=ref, commit=commit, report_uri=report))
        c.set_tag(rid, "pinsage.model_version", version)
        c.set_tag(rid, "pinsage.promoted", str(promoted).lower())
        c.set_tag(rid, "pinsage.promotion_reason", reason)
        s.result = {"model_name": name, "version": version, "model_uri": f"models:/{name}/{version}",
                    "promoted": promoted, "reason": reason, "validation_mrr": validation_mrr,
                    "mlflow_run_id": rid}
    c.set_terminated(rid, status="FINISHED")
    return s.result


main = main_for(run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
