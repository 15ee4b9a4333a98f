"""Failure notifications: one clear line per failed task, and a webhook when configured.

Called by the DAG's failure notifier (``dags/pinsage_wiring.py``) with the Airflow task context, once
a task has failed for good (retries spent, or an error a retry cannot fix; retries themselves are not
notified). It always logs the facts, secrets redacted. When the Airflow Connection
``pinsage_failure_webhook`` exists (an incoming-webhook URL of a chat tool or an alerting gateway),
it also POSTs them as JSON. A notification that cannot be delivered is logged, never raised: it
must not hide the task's own error.

What leaves the machine is kept to ids and the exception's type (``{"text", "dag_id", "run_id",
"task_id", "try_number", "error_type", "log_url"}``): an exception's message can quote a path, a
row of data or a credential. The webhook must be https (its path is often the token, as in Slack's
hooks), and the log names only its scheme and host.

The Connection, e.g. as an environment variable on the workers (or in the Connections UI, the whole
URL in *Host*)::

    AIRFLOW_CONN_PINSAGE_FAILURE_WEBHOOK='https://hooks.example.com/services/T000/B000/XXXX'
"""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.parse import urlsplit

from tasks.redact import redact

log = logging.getLogger("pinsage.tasks.notify")
CONNECTION_ID = "pinsage_failure_webhook"


def failure_message(context) -> dict:
    """The facts of a failed task, from the Airflow context (a mapping): ids and the exception type
    for the webhook, and the redacted exception text for the local log only (``"error"``)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    error = context.get("exception")
    get = (lambda name, default=None: getattr(ti, name, default)) if ti is not None else (lambda n, d=None: d)
    try_number = get("try_number")
    facts = {
        "dag_id": get("dag_id") or getattr(dag_run, "dag_id", None),
        "run_id": get("run_id") or getattr(dag_run, "run_id", None),
        "task_id": get("task_id"),
        "try_number": try_number,
        "error_type": type(root_cause(error)).__name__ if error is not None else None,
        "log_url": get("log_url"),
    }
    facts["text"] = (f"pinsage: task {facts['task_id']} of {facts['dag_id']} run {facts['run_id']} failed "
                     f"(try {try_number}): {facts['error_type']}")
    facts["error"] = redact(f"{type(error).__name__}: {error}")[:2000] if error is not None else None
    return facts


def root_cause(error: BaseException) -> BaseException:
    """The error at the end of the ``raise ... from`` chain: the DAG's wrapper raises
    ``AirflowFailException`` from the task's own error (a ``DatasetError``), and that is the news."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def webhook_url(conn) -> str:
    """The https URL of a webhook Connection: its *Host* when that holds a whole URL, else the URI
    form's parts (``https://host:port/path`` parses into conn_type, host, port and schema)."""
    host = (conn.host or "").strip()
    if "://" in host:
        url = host
    else:
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else "https"
        url = (f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
               + (f"/{conn.schema.lstrip('/')}" if conn.schema else ""))
    return https_only(url)


def https_only(url: str) -> str:
    """``url`` when it is https with a host; else a ValueError that does not quote it."""
    parts = urlsplit(str(url))
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"the failure webhook (Connection {CONNECTION_ID!r}) must be an https:// URL, got "
                         f"{parts.scheme or 'no'} scheme (its path is usually the token: never send it in clear)")
    return url


def where(url: str) -> str:
    """What a log may say of a webhook URL: scheme and host (the path and query are the secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def deliver(facts: dict, url: str, timeout_s: float = 10.0) -> bool:
    """POST the facts (ids and the exception type only) to an https webhook; True when it answered 2xx."""
    payload = {k: facts[k] for k in ("text", "dag_id", "run_id", "task_id", "try_number", "error_type", "log_url")}
    try:
        url = https_only(url)
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            log.info("failure notification sent to %s (HTTP %s)", where(url), resp.status)
            return True
    except Exception as err:  # noqa: BLE001  (a lost notification must not mask the task's error)
        reason = type(err).__name__ + (f" {err.code}" if hasattr(err, "code") else "")
        log.warning("failure notification to %s failed: %s", where(url), reason)
        return False


def connection_url(conn_id: str = CONNECTION_ID) -> str | None:
    """The webhook URL of the Airflow Connection ``conn_id``, or None when it is not defined."""
    from airflow.sdk import Connection  # here: tasks/ imports Airflow only when a DAG's callback runs

    try:
        conn = Connection.get(conn_id)
    except Exception:  # noqa: BLE001  (not defined: notifications are logged only)
        return None
    return webhook_url(conn)


def notify_failure(context, url: str | None = None) -> dict:
    """Log the failure; POST it to ``url``, else to the ``pinsage_failure_webhook`` Connection if any."""
    facts = failure_message(context)
    log.error("%s (%s)", facts["text"], facts["error"])
    try:
        url = url or connection_url()
    except ValueError as err:  # a misconfigured Connection: say so, never raise over the task's error
        log.warning("failure notification not sent: %s", err)
        return facts
    if url:
        deliver(facts, url)
    return facts
