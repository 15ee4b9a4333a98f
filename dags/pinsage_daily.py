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

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from pinsage_wiring import CHAMPION_ASSET, DAG_DEFAULTS, announce_champion_event, fail_fast, form_params, run_step

from tasks.handovers import handed

DAG_ID = "pinsage_daily"

# The trigger form: every row of the parameter table (pinsage/run/params.py) shown on this DAG, in
# its section, plus "overrides" (dotted PipelineConfig keys, checked like the rows).
PARAMS = form_params(DAG_ID)

# The heavy step takes a slot of this pool, so concurrent runs (a backfill beside the daily run, two
# registered models) train one at a time instead of sharing the worker's cores. Created by
# scripts/demo.sh, the compose stack's airflow-init and the tests: `airflow pools set pinsage_train 1 …`.
TRAIN_POOL = "pinsage_train"


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


@dag(
    dag_id=DAG_ID,
    description="Daily PinSage retrain: features, random-walk neighbourhoods, training, export, faiss index, "
                "offline evaluation; registers a model version in MLflow and gates its `champion` alias.",
    **DAG_DEFAULTS,
    max_active_tasks=2,
    dagrun_timeout=timedelta(hours=12),
    params=PARAMS,
    tags=["pinsage", "recommender", "mlflow", "training"],
    doc_md=__doc__,
)
def pinsage_daily():
    # Each task imports its step when it runs (parsing stays cheap), is handed what tasks.handovers
    # says, and returns the step's references plus the run reference, so each task depends only on the
    # tasks whose outputs it reads.
    @task(execution_timeout=timedelta(minutes=30))
    def prepare() -> dict:
        from tasks import prepare as step

        ctx = get_current_context()
        dag_run = ctx["dag_run"]
        run_type = getattr(dag_run, "run_type", None)
        run_type = getattr(run_type, "value", run_type)
        with fail_fast():
            ref = step.run({k: ctx["params"][k] for k in ctx["params"]}, run_key=ctx["run_id"], dag_id=DAG_ID,
                           logical_date=_iso(ctx.get("logical_date")),
                           run_type=str(run_type) if run_type else None,
                           data_interval_end=_iso(ctx.get("data_interval_end")),
                           triggered_by=getattr(dag_run, "triggering_user_name", None))
        return dict(ref, ref=ref)

    @task(execution_timeout=timedelta(hours=1))
    def features(prepared: dict) -> dict:
        from tasks import features as step

        return run_step(step, prepared["ref"], **handed("features", prepare=prepared))

    @task(execution_timeout=timedelta(minutes=30))
    def graph(prepared: dict) -> dict:
        from tasks import graph as step

        return run_step(step, prepared["ref"], **handed("graph", prepare=prepared))

    @task(execution_timeout=timedelta(hours=2))
    def neighbors(graphed: dict) -> dict:
        from tasks import neighbors as step

        return run_step(step, graphed["ref"], **handed("neighbors", graph=graphed))

    @task(execution_timeout=timedelta(hours=6), pool=TRAIN_POOL)
    def train(featured: dict, neighboured: dict) -> dict:
        from tasks import train as step

        return run_step(step, featured["ref"], **handed("train", features=featured, neighbors=neighboured))

    @task(execution_timeout=timedelta(hours=2))
    def export(trained: dict) -> dict:
        from tasks import export as step

        return run_step(step, trained["ref"], **handed("export", train=trained))

    @task(execution_timeout=timedelta(hours=1))
    def index(exported: dict) -> dict:
        from tasks import index as step

        return run_step(step, exported["ref"], **handed("index", export=exported))

    @task(execution_timeout=timedelta(hours=2))
    def evaluate(indexed: dict) -> dict:
        from tasks import evaluate as step

        return run_step(step, indexed["ref"], **handed("evaluate", index=indexed))

    @task(execution_timeout=timedelta(minutes=30))
    def register(indexed: dict, evaluated: dict) -> dict:
        from tasks import register as step

        return run_step(step, indexed["ref"], **handed("register", index=indexed, evaluate=evaluated))

    @task(outlets=[CHAMPION_ASSET])
    def announce_champion(registered: dict) -> None:
        """Emit a `pinsage_champion` asset event when this run's version took the alias; else skip."""
        announce_champion_event(registered, validation_mrr=registered["validation_mrr"])

    prepared = prepare()
    trained = train(features(prepared), neighbors(graph(prepared)))
    indexed = index(export(trained))
    announce_champion(register(indexed, evaluate(indexed)))


pinsage_daily()
