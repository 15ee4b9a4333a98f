"""What the PinSage DAG files share: the trigger forms' parameters (from the table in
``pinsage.run.params``), running a step, failure notifications, retries, the schedule and the
``pinsage_champion`` asset. Wiring only: importing it touches no database, network or GPU (the
parameter table and ``tasks.handovers`` are standard library only). The project is an installed
package (``pip install -e .``); Airflow puts this folder on ``sys.path``, so the DAG files import it."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, BaseNotifier, Param, get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pinsage.run.params import form

# Updated when a version takes the `champion` alias (a retrain or a refresh); the event's extra carries
# the model name and version. A downstream DAG schedules on this object (dags/pinsage_serving.py) or on
# `Asset.ref(name="pinsage_champion")`: `Asset("pinsage_champion")` has another URI, so it is another asset.
CHAMPION_ASSET = Asset(name="pinsage_champion", uri="pinsage://registry/champion", group="model")


def form_params(dag_id: str, **descriptions: str) -> dict:
    """The trigger form of ``dag_id``: ``airflow.sdk.Param`` s generated from the parameter table."""
    return {name: Param(default, **schema) for name, (default, schema) in form(dag_id, descriptions).items()}


class FailureNotifier(BaseNotifier):
    """A task failed for good: one clear line in its log and, when the Airflow Connection
    ``pinsage_failure_webhook`` exists, a POST of its ids and error type there (``tasks/notify.py``)."""

    def notify(self, context) -> None:
        from tasks.notify import notify_failure  # at run time: the notifier pulls requests

        notify_failure(context)


DEFAULT_ARGS = {
    "owner": "pinsage",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": FailureNotifier(),
}


@contextlib.contextmanager
def fail_fast():
    """Errors a retry cannot fix (bad input, a bad parameter: ``tasks.errors.permanent_errors``) fail
    the task at once, without Airflow's retries; anything else is retried."""
    from tasks.errors import permanent_errors  # at run time: the step's error types pull pandas

    try:
        yield
    except permanent_errors() as err:
        raise AirflowFailException(f"{type(err).__name__}: {err}") from err


def run_step(step, ref: dict, **handed) -> dict:
    """``step.run(ref, **handed)`` under :func:`fail_fast`; its references plus ``ref`` (the run
    reference) for the tasks downstream."""
    with fail_fast():
        result = step.run(ref, **handed)
    return dict(result, ref={k: v for k, v in ref.items() if k != "ref"})


# What every PinSage DAG shares in its ``@dag(...)``: a daily schedule from a fixed start, no catch-up,
# one run at a time (each gate reads the champion the previous run may have moved), the retry policy.
DAG_DEFAULTS = {"schedule": "@daily", "start_date": datetime(2024, 1, 1, tzinfo=timezone.utc), "catchup": False,
                "max_active_runs": 1, "default_args": DEFAULT_ARGS}


def announce_champion_event(registered: dict, **extra) -> None:
    """In a task with outlet CHAMPION_ASSET: emit its event when the version took ``champion``, else skip.

    The event's extra carries the model name, version and URI, plus ``extra``.
    """
    if not registered["promoted"]:
        raise AirflowSkipException(f"version {registered['version']} is not champion: {registered['reason']}")
    get_current_context()["outlet_events"][CHAMPION_ASSET].extra = {
        "model_name": registered["model_name"], "version": registered["version"],
        "model_uri": registered["model_uri"], **extra}
