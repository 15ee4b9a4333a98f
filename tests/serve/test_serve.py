"""`mlflow models serve` of the champion answers HTTP on 127.0.0.1, bad rows get per-row errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from .conftest import MODEL, community_of, free_port, subprocess_env


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _wait_ready(proc: subprocess.Popen, port: int, log_path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve not ready after {timeout}s:\n{log_path.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker processes
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow  # a whole process run end to end: the full suite has it
def test_the_champion_served_over_http_answers_and_reports_unknown_items_per_row(served, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = subprocess_env({"MLFLOW_TRACKING_URI": served["store"].uri})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(proc, port, log_path)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"dataframe_split": {"columns": ["item_id"], "data": [["i1"], ["nope"], ["i40"]]},
                                   "params": {"k": 5}})
        assert status == 200, body
        out = pd.DataFrame(body["predictions"])
        assert list(out.columns) == ["query_item_id", "rank", "item_id", "title", "score", "error"]
        assert out["query_item_id"].tolist() == ["i1"] * 5 + ["nope"] + ["i40"] * 5  # input order kept
        bad = body["predictions"][5]  # the raw JSON record: null, never NaN, where there is no answer
        assert bad == {"query_item_id": "nope", "rank": None, "item_id": None, "title": None, "score": None,
                       "error": "unknown item_id 'nope': not in the model's catalogue"}
        good = out[out["query_item_id"] != "nope"]
        assert good["error"].isna().all()
        assert good["rank"].tolist() == [1, 2, 3, 4, 5] * 2
        assert (good["item_id"] != good["query_item_id"]).all()
        assert good["title"].tolist() == [f"item {i[1:]}" for i in good["item_id"]]
        for query, group in good.groupby("query_item_id"):
            assert group["score"].is_monotonic_decreasing
            same = sum(community_of(i) == community_of(query) for i in group["item_id"])
            assert same >= 4, group

        # records payload with a per-row k; k=0 is that row's error only
        status, body = _post(url, {"dataframe_records": [{"item_id": "i2", "k": 2}, {"item_id": "i3", "k": 0}]})
        assert status == 200, body
        out = pd.DataFrame(body["predictions"])
        assert out["query_item_id"].tolist() == ["i2", "i2", "i3"]
        assert [r["error"] for r in body["predictions"][:2]] == [None, None]
        assert "k must be an integer >= 1, got 0" in out["error"].iloc[2]

        # a k above the cap is that row's error; a request for more than MAX_RESULTS results is refused
        status, body = _post(url, {"dataframe_records": [{"item_id": "i2", "k": 1001}, {"item_id": "i3", "k": 1}]})
        assert status == 200 and body["predictions"][0]["error"] == "row 0 (item_id 'i2'): k must be <= 1000, got 1001"
        assert [r["item_id"] for r in body["predictions"][1:]] != [None]
        status, body = _post(url, {"dataframe_split": {"columns": ["item_id"], "data": [["i1"]] * 101},
                                   "params": {"k": 1000}})
        assert status == 400, body
        assert "101 queries x k = 1000, more than 100,000 results" in body.get("stack_trace", ""), body
        assert proc.poll() is None  # refused, and still serving

        # a payload without item_id is refused as a whole, with a message saying what is missing
        status, body = _post(url, {"dataframe_split": {"columns": ["id"], "data": [["i1"]]}})
        assert status == 400 and "item_id" in body.get("message", ""), body
        assert proc.poll() is None  # the server is still up
    finally:
        _stop(proc)
    assert proc.poll() is not None
