"""What the PinSage DAG files share: the project on ``sys.path``, the trigger forms' parameters (from
the table in ``pinsage.run.params``), failure notifications, retries and the ``pinsage_champion``
asset. Wiring only: importing it touches no database, network or GPU (the parameter table is stdlib)."""

from __future__ import annotations

import importlib
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import Asset, BaseNotifier

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Updated when a version takes the `champion` alias (a retrain or a refresh); the event's extra carries
# the model name, version and URI. Schedule downstream DAGs on this object (dags/pinsage_serving.py) or on
# `Asset.ref(name="pinsage_champion")`: `Asset("pinsage_champion")` has another URI, so it is another asset.
CHAMPION_ASSET = Asset(name="pinsage_champion", uri="pinsage://registry/champion", group="model")


def _project_on_path() -> None:
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))


def form_params(dag_id: str, **descriptions: str) -> dict:
    """The trigger form of ``dag_id``: ``airflow.sdk.Param`` s generated from the parameter table."""
    from airflow.sdk import Param

    _project_on_path()
    rows = importlib.import_module("pinsage.run.params").form(dag_id, descriptions)
    return {name: Param(default, **schema) for name, (default, schema) in rows.items()}


class FailureNotifier(BaseNotifier):
    """A task failed for good: one clear line in its log and, when the Airflow Connection
    ``pinsage_failure_webhook`` exists, a POST of its ids and error type there (``tasks/notify.py``)."""

    def notify(self, context) -> None:
        _project_on_path()
        importlib.import_module("tasks.notify").notify_failure(context)


DEFAULT_ARGS = {
    "owner": "pinsage",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": FailureNotifier(),
}


def call_step(module: str, function: str, *args, **kwargs):
    """Import ``tasks.<module>`` at run time (never at parse time) and call ``function``; bad input
    and bad parameters fail the task without retries."""
    _project_on_path()
    from airflow.sdk.exceptions import AirflowFailException

    errors = importlib.import_module("tasks.errors")
    try:
        return getattr(importlib.import_module(f"tasks.{module}"), function)(*args, **kwargs)
    except errors.permanent_errors() as err:
        raise AirflowFailException(f"{type(err).__name__}: {err}") from err


# What both DAGs share in their ``@dag(...)``: a daily schedule from a fixed start, no catch-up, one
# run at a time (each gate reads the champion the previous run may have moved), the retry policy.
DAILY = {"schedule": "@daily", "start_date": datetime(2024, 1, 1, tzinfo=timezone.utc), "catchup": False,
         "max_active_runs": 1, "default_args": DEFAULT_ARGS}


def announce_champion_event(registered: dict, **extra) -> None:
    """In a task with outlet CHAMPION_ASSET: emit its event when the version took ``champion``, else skip.

    The event's extra carries the model name, version and URI, plus ``extra``.
    """
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowSkipException

    if not registered["promoted"]:
        raise AirflowSkipException(f"version {registered['version']} is not champion: {registered['reason']}")
    get_current_context()["outlet_events"][CHAMPION_ASSET].extra = {
        "model_name": registered["model_name"], "version": registered["version"],
        "model_uri": registered["model_uri"], **extra}
