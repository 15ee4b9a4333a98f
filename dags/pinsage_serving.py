"""
### pinsage_champion_reload: tell the recommender service that `champion` moved

```
reload_recommender
```

Scheduled on the asset `pinsage_champion` (the one `pinsage_daily` and `pinsage_refresh` update when a
version takes the `champion` alias): each event runs this DAG. **reload_recommender** reads the
triggering events, takes the newest (`model_name`, `version` from its extra) and, when
`PINSAGE_RECOMMENDER_URL` is set on the workers, POSTs `{url}/reload` with `{"version": ...}` so the
recommender service (`python -m tasks.serve`) loads the new champion now rather than at its next poll
of the registry. `PINSAGE_RECOMMENDER_MODEL` limits that to the model the service serves. Unset URL:
the task only logs it (the service follows the alias by polling). A non-2xx answer or an unreachable
service fails the task, which Airflow retries. Returns `{model_name, version, told_recommender}`.

Starts paused like every DAG: unpause it to follow the champion (events while it is paused are not
queued). Wiring only: the HTTP call lives in `tasks/recommender_reload.py`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from pinsage_wiring import CHAMPION_ASSET, DAG_DEFAULTS, DEFAULT_ARGS, fail_fast

DAG_ID = "pinsage_champion_reload"


@dag(
    dag_id=DAG_ID,
    description="On each new champion (asset pinsage_champion): tell the recommender service to load it now.",
    schedule=[CHAMPION_ASSET],
    start_date=DAG_DEFAULTS["start_date"],
    catchup=False,
    max_active_runs=1,  # reloads in the order the champions came; events arriving meanwhile wait
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(minutes=30),
    tags=["pinsage", "recommender", "serving"],
    doc_md=__doc__,
)
def pinsage_champion_reload():
    @task(execution_timeout=timedelta(minutes=2))
    def reload_recommender() -> dict:
        from tasks.recommender_reload import on_champion  # at run time: parsing stays cheap

        events = get_current_context()["triggering_asset_events"].get(CHAMPION_ASSET, [])
        with fail_fast():
            return on_champion(list(events))

    reload_recommender()


pinsage_champion_reload()
