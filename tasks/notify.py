"""Failure notifications: one clear line per failed task, and a webhook when configured.

Called by the DAG's ``on_failure_callback`` with the Airflow task context, once a task has failed
for good (retries spent, or an error a retry cannot fix; retries themselves are not notified). It always logs; when
``PINSAGE_FAILURE_WEBHOOK`` is set (an incoming-webhook URL of a chat tool, an alerting gateway),
it also POSTs the same facts as JSON. A notification that cannot be delivered is logged, never
raised: it must not hide the task's own error.

Environment:
    PINSAGE_FAILURE_WEBHOOK   URL that receives ``{"text", "dag_id", "run_id", "task_id", "try_number",
                              "error", "log_url"}``; unset: log only
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

from tasks.redact import redact

log = logging.getLogger("pinsage.tasks.notify")
WEBHOOK_ENV = "PINSAGE_FAILURE_WEBHOOK"


def failure_message(context) -> dict:
    """The facts of a failed task, from the Airflow context (a mapping), secrets redacted."""
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
        "error": redact(f"{type(error).__name__}: {error}")[:2000] if error is not None else None,
        "log_url": get("log_url"),
    }
    facts["text"] = (f"pinsage: task {facts['task_id']} of {facts['dag_id']} run {facts['run_id']} failed "
                     f"(try {try_number}): {facts['error']}")
    return facts


def notify_failure(context, webhook: str | None = None, timeout_s: float = 10.0) -> dict:
    facts = failure_message(context)
    log.error("%s", facts["text"])
    url = webhook or os.environ.get(WEBHOOK_ENV)
    if url:
        req = urllib.request.Request(url, data=json.dumps(facts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                log.info("failure notification sent to %s (HTTP %s)", redact(url), resp.status)
        except Exception as err:  # noqa: BLE001  (a lost notification must not mask the task's error)
            log.warning("failure notification to %s failed: %s", redact(url), err)
    return facts
