"""tasks/recommender_reload.py against a real HTTP server on 127.0.0.1: what is sent, what raises.

The DAG that calls it, asset-triggered under a live scheduler, is in ``test_e2e_production.py``.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from tasks import recommender_reload as rr

from .conftest import RecordingServer

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)


@pytest.fixture
def recorder():
    r = RecordingServer()
    yield r
    r.close()


def _event(version: str, minutes: int, model: str = "pinsage"):
    """An event as Airflow hands it to the task: ``.extra`` and ``.timestamp``."""
    return SimpleNamespace(extra={"model_name": model, "version": version, "model_uri": f"models:/{model}/{version}",
                                  "validation_mrr": 0.1}, timestamp=T0 + timedelta(minutes=minutes))


def test_the_newest_event_is_posted_to_reload_and_the_service_answer_logged(recorder, caplog):
    caplog.set_level(logging.INFO, logger="pinsage.tasks.recommender_reload")
    events = [_event("3", 5), _event("2", 1)]  # not in time order
    out = rr.on_champion(events, {rr.URL_ENV: recorder.url + "/"})
    assert out == {"model_name": "pinsage", "version": "3", "told_recommender": True}
    assert recorder.requests == [{"path": "/reload", "body": {"version": "3"}, "content_type": "application/json"}]
    assert f"the recommender at {recorder.url} is checking the registry (model pinsage, serving version 1)" \
        in caplog.text


def test_mappings_work_as_events_and_a_run_by_hand_asks_for_a_check_without_version(recorder):
    out = rr.on_champion([{"extra": {"model_name": "pinsage", "version": 4}, "timestamp": T0}],
                         {rr.URL_ENV: recorder.url})
    assert out == {"model_name": "pinsage", "version": "4", "told_recommender": True}
    out = rr.on_champion([], {rr.URL_ENV: recorder.url, rr.MODEL_ENV: "pinsage"})
    assert out == {"model_name": "pinsage", "version": None, "told_recommender": True}
    assert [r["body"] for r in recorder.requests] == [{"version": "4"}, {}]


def test_only_the_served_models_events_are_passed_on(recorder):
    env = {rr.URL_ENV: recorder.url, rr.MODEL_ENV: "pinsage"}
    out = rr.on_champion([_event("1", 0), _event("7", 3, model="pinsage-other")], env)
    assert out == {"model_name": "pinsage", "version": "1", "told_recommender": True}
    out = rr.on_champion([_event("2", 0, model="pinsage-other")], env)
    assert out == {"model_name": "pinsage-other", "version": "2", "told_recommender": False}
    assert [r["body"] for r in recorder.requests] == [{"version": "1"}]


def test_without_a_url_nothing_is_sent_and_the_log_says_the_service_polls(recorder, caplog):
    caplog.set_level(logging.INFO, logger="pinsage.tasks.recommender_reload")
    out = rr.on_champion([_event("2", 0)], {rr.URL_ENV: "  "})
    assert out == {"model_name": "pinsage", "version": "2", "told_recommender": False}
    assert recorder.requests == []
    assert "PINSAGE_RECOMMENDER_URL is not set: the recommender picks it up at its next poll" in caplog.text


@pytest.mark.parametrize("status, headers", [(500, {}), (503, {}), (404, {}), (302, {"Location": "/elsewhere"})])
def test_a_non_2xx_answer_raises_so_airflow_retries(status, headers):
    server = RecordingServer(status, headers)
    try:
        with pytest.raises(rr.ReloadError, match=f"answered HTTP {status} to POST /reload"):
            rr.on_champion([_event("2", 0)], {rr.URL_ENV: server.url})
        assert [r["path"] for r in server.requests] == ["/reload"]  # a redirect is not followed
    finally:
        server.close()


def test_an_unreachable_service_raises_and_the_message_hides_credentials():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:s3cret@127.0.0.1:{port}/base"
    with pytest.raises(rr.ReloadError, match="cannot be reached") as err:
        rr.request_reload(url, "1", timeout_s=2)
    assert "s3cret" not in str(err.value) and f"http://127.0.0.1:{port}" in str(err.value)


def test_a_service_slower_than_the_timeout_raises():
    assert rr.TIMEOUT_S == 10  # the default
    server = RecordingServer(delay_s=2)
    try:
        with pytest.raises(rr.ReloadError, match="cannot be reached"):
            rr.request_reload(server.url, "1", timeout_s=0.5)
    finally:
        server.close()
