"""
### pinsage_refresh: embed the items added since the champion was trained, without retraining

```
embed ── register ── announce_champion
```

* **embed** fetches the `champion` version of `model_name` from MLflow (its network, embeddings,
  fitted features, neighbourhoods, training edges and validation pairs), finds the items of `data`
  that it does not know and embeds them through the cold-start path: the champion's fitted word
  vectors, random walks from the new items over the graph extended with the contexts that touch
  them, the MapReduce export with the champion's network. No existing item's embedding moves.
  With no new item the run ends here (the other tasks are skipped).
* **register** logs the extended catalogue (the layout a retrain logs) and registers it as a new
  version tagged `pinsage.kind=refresh` and `pinsage.parent_version`. The `champion` alias moves to
  it only through the gate: both versions rank the champion's own validation pairs, and the refresh
  may cost at most the share `max_mrr_loss` (2%) of the champion's MRR there.
* **announce_champion** updates the `pinsage_champion` asset when the alias moved.

Runs daily between retrains (`pinsage_daily` retrains from scratch); trigger it from the UI with
another `data` to add items at once. Wiring only: parsing this file touches no database or network.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from pinsage_wiring import CHAMPION_ASSET, DAG_DEFAULTS, announce_champion_event, fail_fast, form_params

DAG_ID = "pinsage_refresh"

PARAMS = form_params(DAG_ID, data="The dataset with the added items (and their first interactions, if any). "
                                   "Relative paths are resolved against the project root (or $PINSAGE_DATA_ROOT).",
                     model_name="The registered model whose champion is refreshed.")


@dag(
    dag_id=DAG_ID,
    description="Daily refresh between retrains: new items embedded with the champion's network, no training; "
                "registered as a version whose parent is the champion, gated like a retrain.",
    **DAG_DEFAULTS,  # one run at a time: each refresh starts from the champion the previous one may have moved
    dagrun_timeout=timedelta(hours=2),
    params=PARAMS,
    tags=["pinsage", "recommender", "mlflow", "refresh"],
    doc_md=__doc__,
)
def pinsage_refresh():
    @task(execution_timeout=timedelta(hours=1))
    def embed() -> dict:
        from tasks import refresh  # at run time, as every step: parsing stays cheap

        ctx = get_current_context()
        with fail_fast():
            return refresh.embed({k: ctx["params"][k] for k in ctx["params"]}, run_key=ctx["run_id"], dag_id=DAG_ID)

    @task(execution_timeout=timedelta(minutes=30))
    def register(embedded: dict) -> dict:
        from tasks import refresh

        if not embedded["n_new"]:
            raise AirflowSkipException(f"no new item in {embedded['data']}: champion version "
                                       f"{embedded['parent_version']} already knows every item")
        with fail_fast():
            return refresh.register(embedded)

    @task(outlets=[CHAMPION_ASSET])
    def announce_champion(registered: dict) -> None:
        """Emit a `pinsage_champion` asset event when the refreshed version took the alias; else skip."""
        announce_champion_event(registered, parent_version=registered["parent_version"])

    announce_champion(register(embed()))


pinsage_refresh()
