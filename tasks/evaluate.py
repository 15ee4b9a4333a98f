"""Step 8, evaluate: MRR and HR@K on the held-out pairs for PinSage and the baselines.

Logs ``metrics.json`` and the metrics table ``metrics.md`` (every figure) as artifacts, and as MLflow
metrics linked to the run's evaluation dataset ``validation_mrr`` / ``test_mrr`` (PinSage),
``test.{method}.{mrr,hr_at_10,hr_at_100}`` and ``valid.{method}.mrr``.
Then renders ``report.html`` (charts against the baselines, training curves, example queries; see
:mod:`pinsage.report`) and logs it. A report that cannot be rendered is logged as the run tag
``pinsage.report_error`` and does not fail the step: a chart never blocks a model's registration.

    python -m tasks.evaluate --run-dir RUN_DIR
"""

from __future__ import annotations

import logging
import math

from pinsage import pipeline
from pinsage.eval.baselines import setting_text
from tasks import mlflow_ui, tracking
from tasks.step import main_for, stage_logger, stage_step

# The figures logged as MLflow metrics, per method: what people compare runs on. Every figure of
# every method stays in metrics.json and the table metrics.md (HR@50, ...).
LOGGED = {"test": ("mrr", "hr@10", "hr@100"), "valid": ("mrr",)}


def metric_values(metrics: dict) -> dict[str, float]:
    out = {}
    for split, block in (("test", metrics), ("valid", metrics["validation"])):
        for method, values in block["methods"].items():
            for name in LOGGED[split]:
                if name in values:
                    out[f"{split}.{method}.{name.replace('@', '_at_')}"] = float(values[name])
    out["validation_mrr"] = float(metrics["validation"]["methods"]["pinsage"]["mrr"])
    out["test_mrr"] = float(metrics["methods"]["pinsage"]["mrr"])
    return out


def _report(c, ref: dict, cfg) -> str | None:
    """Render and log ``report.html``; on failure record why (tag) and carry on. -> its path or None"""

    rid = ref["mlflow_run_id"]
    link = mlflow_ui.run_link(tracking.configure_mlflow(), ref["experiment_id"], rid)
    try:
        path = pipeline.report(cfg, log=stage_logger("evaluate"), mlflow_run_url=link)["report"]
    except Exception as err:  # noqa: BLE001  (the evaluation stands without its report)
        logging.getLogger("pinsage.tasks.evaluate").exception("report.html could not be rendered")
        c.set_tag(rid, "pinsage.report_error", f"{type(err).__name__}: {err}"[:4000])
        return None
    tracking.log_artifacts(c, rid, path)
    return path


def run(ref: dict, embeddings_dir: str | None = None, index_dir: str | None = None) -> dict:

    with stage_step(ref, "evaluate", handed={"embeddings": embeddings_dir, "index": index_dir}) as s:
        c, rid = s.client, s.mlflow_run_id
        result = pipeline.evaluate(s.cfg, log=s.log)
        metrics = s.run.read_json(s.run.metrics)
        values = metric_values(metrics)
        if not math.isfinite(values["validation_mrr"]):
            raise ValueError(f"validation MRR is {values['validation_mrr']}: the evaluation failed")
        # on the run and on its logged model (filled by register), linked to the evaluation dataset
        tracking.log_metrics(c, rid, values, dataset=(ref.get("datasets") or {}).get("evaluation"),
                             model_id=mlflow_ui.step_logged_model(c, ref))
        # the baselines' settings chosen on validation (weights, EASE's lambda, RP3beta's alpha and beta, ...)
        tracking.log_params(c, rid, {f"baselines.{name}.{k}": setting_text(v)
                                     for name, params in metrics.get("hyperparameters", {}).items()
                                     for k, v in params.items()})
        for path in (s.run.metrics, s.run.metrics_table, s.run.ranks):  # ranks: paired comparisons across runs
            s.log_artifacts(path)
        s.result = {"metrics": result["metrics"], "metrics_table": result["metrics_table"], "ranks": result["ranks"],
                    "validation_mrr": values["validation_mrr"], "test_mrr": values["test_mrr"],
                    "report": _report(c, ref, s.cfg)}
    return s.result


main = main_for(run, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
