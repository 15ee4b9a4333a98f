"""Failure notifications and redaction: what leaves the machine, and what a log may say of a webhook.

The delivery over https through a real Airflow run is in ``test_dag.py``
(``test_airflow_dags_test_runs_the_dag_on_sqlite``); here, the rules on real HTTP servers.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from airflow.sdk import Connection

from tasks import notify
from tasks.redact import flat_params, redact, redact_obj


@pytest.mark.parametrize("text, secret", [
    ("could not connect: password=hunter2 host=db", "hunter2"),
    ("postgresql://pinsage:pg-s3cret@db:5432/mlflow", "pg-s3cret"),
    ('{"api_key": "k-123456", "dimension": 3}', "k-123456"),
    ("MLFLOW_TRACKING_PASSWORD=ml-s3cret; retrying", "ml-s3cret"),
    ("Authorization token: tk-998877 rejected", "tk-998877"),
    ("https://hooks.example.com/x?token=abc123&y=1", "abc123"),
    ("ray://pinsage:ray-s3cret@head:10001", "ray-s3cret"),
    ("secret_key='quoted value here'", "quoted value here"),
])
def test_redact_hides_url_passwords_and_secret_looking_values(text, secret):
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_keeps_what_is_not_a_secret():
    text = "epochs=3, dimension: 256, path=/data/ml-latest-small, top_t=20"
    assert redact(text) == text
    assert redact_obj({"password": "x", "db": {"url": "sqlite:///a.db", "token": "t"}, "n": [1, "u:p@h"]}) == \
        {"password": "***", "db": {"url": "sqlite:///a.db", "token": "***"}, "n": [1, "u:p@h"]}
    assert flat_params({"train": {"epochs": 3}, "api_key": "k"}) == {"train.epochs": "3", "api_key": "***"}


def _context(error: Exception):
    ti = SimpleNamespace(dag_id="pinsage_daily", run_id="manual__1", task_id="prepare", try_number=2,
                         log_url="http://airflow/log")
    return {"ti": ti, "exception": error}


def test_the_error_type_is_the_cause_the_dags_wrapper_raised_from():
    try:
        try:
            raise KeyError("column")
        except KeyError as err:
            raise RuntimeError("the step failed") from err
    except RuntimeError as wrapped:
        assert notify.failure_message(_context(wrapped))["error_type"] == "KeyError"


def test_the_payload_is_ids_and_the_error_type_and_the_log_keeps_the_redacted_message(caplog):
    facts = notify.failure_message(_context(RuntimeError("cannot read /secret/path: password=hunter2")))
    assert facts["error_type"] == "RuntimeError" and facts["task_id"] == "prepare" and facts["try_number"] == 2
    assert "/secret/path" not in facts["text"] and "hunter2" not in json.dumps(facts)
    with caplog.at_level(logging.INFO, logger="pinsage.tasks.notify"):
        notify.notify_failure(_context(RuntimeError("cannot read /secret/path: password=hunter2")), url=None)
    assert "/secret/path" in caplog.text and "hunter2" not in caplog.text  # no Connection: logged only


class _Hook:
    """A real HTTP server on 127.0.0.1 recording what reaches it; answers ``status``."""

    def __init__(self, status: int = 204):
        self.received = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                hook.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_plain_http_webhook_is_refused_and_nothing_is_sent_in_clear(caplog):
    hook = _Hook()
    try:
        with caplog.at_level(logging.INFO, logger="pinsage.tasks.notify"):
            facts = notify.notify_failure(_context(ValueError("x")), url=f"http://127.0.0.1:{hook.port}/hook/T0KEN")
    finally:
        hook.close()
    assert hook.received == [] and facts["error_type"] == "ValueError"
    assert f"failure notification to http://127.0.0.1:{hook.port} failed: ValueError" in caplog.text
    assert "T0KEN" not in caplog.text


def test_an_undeliverable_notification_is_logged_with_scheme_and_host_only(caplog):
    with caplog.at_level(logging.INFO, logger="pinsage.tasks.notify"):
        ok = notify.deliver(notify.failure_message(_context(ValueError("x"))), "https://127.0.0.1:9/hook/T0KEN",
                            timeout_s=2)
    assert ok is False
    assert "failure notification to https://127.0.0.1:9 failed: URLError" in caplog.text
    assert "T0KEN" not in caplog.text and "/hook" not in caplog.text


def test_the_webhook_url_comes_from_an_airflow_connection_and_must_be_https():
    uri = Connection(conn_id="pinsage_failure_webhook", conn_type="https", host="hooks.example.com", port=8443,
                     schema="services/T000/B000/XXXX")
    assert notify.webhook_url(uri) == "https://hooks.example.com:8443/services/T000/B000/XXXX"
    pasted = Connection(conn_id="pinsage_failure_webhook", conn_type="http",
                        host="https://hooks.example.com/services/T/B/X")
    assert notify.webhook_url(pasted) == "https://hooks.example.com/services/T/B/X"
    for clear in (Connection(conn_id="c", conn_type="http", host="hooks.example.com", schema="T/B/X"),
                  Connection(conn_id="c", conn_type="http", host="http://hooks.example.com/T/B/X")):
        with pytest.raises(ValueError, match="must be an https:// URL") as err:
            notify.webhook_url(clear)
        assert "T/B/X" not in str(err.value)
