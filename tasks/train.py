"""Step 5, train: PinSage on the features and neighbourhoods; per-epoch metrics to MLflow.

Logs ``train_loss``, ``epoch_validation_mrr``, ``learning_rate`` and ``epoch_seconds`` as metric
histories (step = epoch) and the checkpoint directory (``model.pt``, ``model_config.json``,
``history.json``, the resumable ``last.pt``) as the ``checkpoint/`` artifacts. A retried step
resumes from ``last.pt``: the finished epochs are not recomputed and not logged twice.

    python -m tasks.train --run-dir RUN_DIR
"""

from __future__ import annotations

from pinsage import pipeline
from pinsage.util.io import sha256_file
from tasks import tracking
from tasks.step import main_for, stage_step

CHECKPOINT_ARTIFACTS = "checkpoint"
CHECKPOINT_FILES = ("model.pt", "model_config.json", "history.json", "last.pt")


def epoch_metrics(record: dict) -> dict[str, float]:
    return {"train_loss": float(record["loss"]), "epoch_validation_mrr": float(record["validation_score"]),
            "learning_rate": float(record["learning_rate"]), "epoch_seconds": float(record["seconds"])}


def run(ref: dict, features: str | None = None, neighbors: str | None = None) -> dict:

    with stage_step(ref, "train", handed={"features_table": features, "neighbors_table": neighbors}) as s:
        def on_epoch_end(record: dict) -> None:
            tracking.log_metrics(s.client, s.mlflow_run_id, epoch_metrics(record), step=int(record["epoch"]))

        pipeline.train(s.cfg, log=s.log, on_epoch_end=on_epoch_end)
        history = s.run.read_json(s.run.history)
        for record in history["epochs"]:  # epochs finished before a resume were logged by that attempt
            on_epoch_end(record)
        prior = history.get("prior") or {}
        tracking.log_metrics(s.client, s.mlflow_run_id, {
            "best_epoch": history["best_epoch"], "epochs_trained": len(history["epochs"]),
            **({"prior_weight": prior["chosen"]} if prior else {})})
        stopped = history.get("stopped") or {}
        s.client.set_tag(s.mlflow_run_id, "pinsage.training_stopped",
                         f"{stopped.get('reason', 'unknown')}: {stopped.get('detail', '')}")
        for name in CHECKPOINT_FILES:
            s.log_artifacts(s.run.checkpoint / name, CHECKPOINT_ARTIFACTS)
        s.result = {"model_dir": str(s.run.checkpoint),
                    "model_uri": f"runs:/{s.mlflow_run_id}/{CHECKPOINT_ARTIFACTS}",
                    "model_sha256": sha256_file(s.run.checkpoint / "model.pt"),
                    "best_epoch": int(history["best_epoch"]),
                    "best_validation_mrr": float(history["best_validation_mrr"])}
    return s.result


main = main_for(run, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
