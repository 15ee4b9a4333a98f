"""
### pinsage_daily: retrain PinSage, record everything in MLflow, gate the `champion` alias

```
prepare ─┬─ features ───────────────┐
         └─ graph ── neighbors ─────┴─ train ── export ── index ── evaluate ── register ── announce_champion
```

* **prepare** opens the run: a run directory keyed by the Airflow run id, `config.json`, and one
  MLflow run tagged with the DAG id, run id, logical date, git commit and the data's sha256.
  A scheduled (or backfill) run trains on the interactions up to its data interval's end, so a
  backfill of a past date sees what that day's run saw; a triggered run sees all the data unless
  `max_timestamp` is set.
* **features**, **graph**, **neighbors**, **train**, **export**, **index**, **evaluate** run
  the `pinsage` stages and log their outputs as artifacts (per-epoch loss and validation MRR as
  metric histories).
* **export** is handed the model URI the train step logged (`runs:/<id>/checkpoint`); the index
  is built over those embeddings and records which model it came from.
* **register** logs the pyfunc recommender (network + embeddings + faiss index + titles) as a new
  version of the registered model (`model_name`, default `pinsage`). The alias `champion` moves to
  it only if its validation MRR beats the champion's by more than `promotion_margin`; otherwise the
  version is tagged `pinsage.promotion=rejected` with `pinsage.promotion_reason`.
  Consumers load `models:/pinsage@champion`.
* **announce_champion** updates the Airflow asset `pinsage_champion` when the alias moved (and is
  skipped when it did not), so downstream DAGs can be scheduled on a new champion.

`train` takes a slot of the pool `pinsage_train` (one training at a time per worker pool). A task
that fails for good logs one line naming the DAG, run, task and error, and POSTs it as JSON to
the https webhook of the Airflow Connection `pinsage_failure_webhook` when it exists.

Trigger with a config from the UI's form or the REST API (`conf` overrides any parameter;
`overrides` takes dotted `PipelineConfig` keys, e.g. `{"features.word2vec_dim": 64}`). The form's
fields, their bounds and defaults come from one table (`pinsage/run/params.py`), as do the flags of
`python -m pinsage run` and `python -m tasks.prepare`.
`engine` = `ray` (with `ray_address`; empty starts a local Ray in the worker) runs the
neighbourhood step as sharded Ray tasks (the graph shared once through the object store) and the
export as map / join / reduce Ray tasks per layer; the other steps run in the worker.

This file only wires tasks: it imports no torch, faiss, mlflow or pandas and touches no database,
network or GPU when parsed. The steps live in `tasks/` and also run from the command line.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

if str(Path(__file__).resolve().parent) not in sys.path:  # the shared wiring lies beside this file
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from pinsage_wiring import CHAMPION_ASSET, DAILY, announce_champion_event, call_step, form_params  # noqa: E402

DAG_ID = "pinsage_daily"

# The trigger form: every row of the parameter table (pinsage/run/params.py) shown on this DAG, in
# its section, plus "overrides" (dotted PipelineConfig keys, checked like the rows).
PARAMS = form_params(DAG_ID)

# The heavy step takes a slot of this pool, so concurrent runs (a backfill beside the daily run, two
# registered models) train one at a time instead of sharing the worker's cores. Created by
# scripts/demo.sh, the compose stack's airflow-init and the tests: `airflow pools set pinsage_train 1 …`.
TRAIN_POOL = "pinsage_train"


def _run_step(step: str, *args, **kwargs) -> dict:
    """Run ``tasks.<step>.run`` (imported at run time); bad input fails without retries.

    Returns the step's references plus ``ref`` (the run reference) for the downstream tasks.
    """
    result = call_step(step, "run", *args, **kwargs)
    ref = result if step == "prepare" else args[0]
    return dict(result, ref={k: v for k, v in ref.items() if k != "ref"})


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


@dag(
    dag_id=DAG_ID,
    description="Daily PinSage retrain: features, random-walk neighbourhoods, training, export, faiss index, "
                "offline evaluation; registers a model version in MLflow and gates its `champion` alias.",
    **DAILY,
    max_active_tasks=2,
    dagrun_timeout=timedelta(hours=12),
    params=PARAMS,
    tags=["pinsage", "recommender", "mlflow", "training"],
    doc_md=__doc__,
)
def pinsage_daily():
    @task(execution_timeout=timedelta(minutes=30))
    def prepare() -> dict:
        ctx = get_current_context()
        params = {k: ctx["params"][k] for k in ctx["params"]}
        dag_run = ctx["dag_run"]
        run_type = getattr(dag_run, "run_type", None)
        run_type = getattr(run_type, "value", run_type)
        return _run_step("prepare", params, run_key=ctx["run_id"], dag_id=DAG_ID,
                         logical_date=_iso(ctx.get("logical_date")), run_type=str(run_type) if run_type else None,
                         data_interval_end=_iso(ctx.get("data_interval_end")),
                         triggered_by=getattr(dag_run, "triggering_user_name", None))

    # Every task returns its step's references plus the run reference, so each task depends only on
    # the tasks whose outputs it reads.
    @task(execution_timeout=timedelta(hours=1))
    def features(prepared: dict) -> dict:
        return _run_step("features", prepared, prepare_dir=prepared["prepare_dir"])

    @task(execution_timeout=timedelta(minutes=30))
    def graph(prepared: dict) -> dict:
        return _run_step("graph", prepared, prepare_dir=prepared["prepare_dir"])

    @task(execution_timeout=timedelta(hours=2))
    def neighbors(graph_out: dict) -> dict:
        return _run_step("neighbors", graph_out["ref"], graph=graph_out["graph"])

    @task(execution_timeout=timedelta(hours=6), pool=TRAIN_POOL)
    def train(features_out: dict, neighbors_out: dict) -> dict:
        return _run_step("train", features_out["ref"], features=features_out["features"],
                         neighbors=neighbors_out["neighbors"])

    @task(execution_timeout=timedelta(hours=2))
    def export(train_out: dict) -> dict:
        return _run_step("export", train_out["ref"], model_uri=train_out["model_uri"])

    @task(execution_timeout=timedelta(hours=1))
    def index(export_out: dict) -> dict:
        return _run_step("index", export_out["ref"], embeddings_dir=export_out["embeddings_dir"],
                         model_uri=export_out["model_uri"], model_sha256=export_out["model_sha256"])

    @task(execution_timeout=timedelta(hours=2))
    def evaluate(index_out: dict) -> dict:
        return _run_step("evaluate", index_out["ref"], embeddings_dir=index_out["embeddings_dir"],
                         index_dir=index_out["index_dir"])

    @task(execution_timeout=timedelta(minutes=30))
    def register(index_out: dict, evaluate_out: dict) -> dict:
        return _run_step("register", index_out["ref"], model_uri=index_out["model_uri"],
                         embeddings_dir=index_out["embeddings_dir"], index_dir=index_out["index_dir"],
                         metrics=evaluate_out["metrics"])

    @task(outlets=[CHAMPION_ASSET])
    def announce_champion(registered: dict) -> None:
        """Emit a `pinsage_champion` asset event when this run's version took the alias; else skip."""
        announce_champion_event(registered, validation_mrr=registered["validation_mrr"])

    prepared = prepare()
    trained = train(features(prepared), neighbors(graph(prepared)))
    indexed = index(export(trained))
    announce_champion(register(indexed, evaluate(indexed)))


pinsage_daily()
