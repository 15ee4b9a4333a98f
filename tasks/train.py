"""Step 5, train: PinSage on the features and neighbourhoods; per-epoch metrics to MLflow.

Logs ``train_loss``, ``epoch_validation_mrr``, ``learning_rate`` and ``epoch_seconds`` as metric
histories (step = epoch) and the checkpoint directory (``model.pt``, ``model_config.json``,
``history.json``, the resumable ``last.pt``) as the ``checkpoint/`` artifacts. A retried step
resumes from ``last.pt``: the finished epochs are not recomputed and not logged twice.

    python -m tasks.train --run-dir RUN_DIR
"""

from __future__ import annotations

import json
from pathlib import Path

from . import common

CHECKPOINT_ARTIFACTS = "checkpoint"
CHECKPOINT_FILES = ("model.pt", "model_config.json", "history.json", "last.pt")


def epoch_metrics(record: dict) -> dict[str, float]:
    return {"train_loss": float(record["loss"]), "epoch_validation_mrr": float(record["validation_score"]),
            "learning_rate": float(record["learning_rate"]), "epoch_seconds": float(record["seconds"])}


def run(ref: dict, features: str | None = None, neighbors: str | None = None) -> dict:
    from pinsage import pipeline

    cfg = common.load_config(ref)
    out = Path(cfg.out)
    common.same_path(features or out / "features" / "features.parquet", out / "features" / "features.parquet",
                     "features")
    common.same_path(neighbors or out / "neighbors" / "neighbors.parquet",
                     out / "neighbors" / "neighbors.parquet", "neighbours")
    rid = ref["mlflow_run_id"]
    with common.step(ref, "train") as c:
        def on_epoch_end(record: dict) -> None:
            common.log_metrics(c, rid, epoch_metrics(record), step=int(record["epoch"]))

        result = pipeline.train(cfg, log=common.stage_logger("train"), on_epoch_end=on_epoch_end)
        model_dir = Path(result["model_dir"])
        history = json.loads((model_dir / "history.json").read_text())
        for record in history["epochs"]:  # epochs finished before a resume were logged by that attempt
            common.log_metrics(c, rid, epoch_metrics(record), step=int(record["epoch"]))
        common.log_metrics(c, rid, {"best_epoch": history["best_epoch"]})
        for name in CHECKPOINT_FILES:
            common.log_artifacts(c, rid, model_dir / name, CHECKPOINT_ARTIFACTS)
    result = {"model_dir": str(model_dir), "model_uri": f"runs:/{rid}/{CHECKPOINT_ARTIFACTS}",
              "model_sha256": common.sha256_file(model_dir / "model.pt"),
              "best_epoch": int(history["best_epoch"]),
              "best_validation_mrr": float(history["best_validation_mrr"])}
    common.write_step_record(ref, "train", result)
    return result


def main(argv=None) -> int:
    return common.cli_main(run, common.cli_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
