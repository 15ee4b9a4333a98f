"""The recommender service (``pinsage.serve.http`` + ``tasks.serve``): answers, clear 4xx for bad
requests, and a new champion served without a restart and without a failed request."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
from starlette.testclient import TestClient

from bench.synthetic import synthetic_recommender
from pinsage.serve.http import MAX_QUERIES, Loaded, Serving, create_app
from pinsage.serve.recommend import Catalogue

from .conftest import ROOT, free_port, subprocess_env

NAME = "svc"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    art = synthetic_recommender(tmp_path_factory.mktemp("cat"), 300, dim=16, seed=0)
    return Catalogue.from_dirs(art["index"], art["embeddings"], art["items"])


@pytest.fixture
def client(catalogue):
    serving = Serving(on_reload=lambda: None)
    serving.swap(Loaded(catalogue, model="m", version="7", source="here", alias="champion"))
    with TestClient(create_app(serving), raise_server_exceptions=False) as c:
        yield c


def test_related_items_by_get_and_by_batch_are_the_catalogues_answers(client, catalogue):
    r = client.get("/related/i5", params={"k": 4})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    expect = catalogue.answers(["i5"], 4)[0]
    assert body["item_id"] == "i5" and body["title"] == "item 5" and body["version"] == "7"
    assert [x["item_id"] for x in body["related"]] == expect.item_ids
    assert [x["rank"] for x in body["related"]] == [1, 2, 3, 4]
    assert [x["title"] for x in body["related"]] == [f"item {i[1:]}" for i in expect.item_ids]
    assert client.get("/related/i5").json()["related"].__len__() == 10  # the default k
    r = client.post("/related", json={"item_ids": ["i1", "nope", "i2"], "k": 3})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["item_id"] for x in results[0]["related"]] == catalogue.answers(["i1"], 3)[0].item_ids
    assert results[1] == {"item_id": "nope", "error": "unknown item_id 'nope': not in the model's catalogue"}
    assert len(results[2]["related"]) == 3
    r = client.post("/related", json={"queries": [{"item_id": "i1", "k": 2}, {"item_id": "i2", "k": 0},
                                                  {"item_id": 3}]})
    results = r.json()["results"]
    assert len(results[0]["related"]) == 2 and "k must be an integer >= 1, got 0" in results[1]["error"]
    assert results[2]["item_id"] == "3" and "unknown item_id '3'" in results[2]["error"]
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["version"] == "7" and h["n_items"] == 300 and h["answer_k"] == 100


@pytest.mark.parametrize("path,status,reason", [
    ("/related/nope", 404, "unknown item_id 'nope'"),
    ("/related/i1?k=0", 400, "k must be an integer >= 1, got '0'"),
    ("/related/i1?k=abc", 400, "k must be an integer >= 1, got 'abc'"),
    ("/related/i1?k=2.5", 400, "k must be an integer >= 1, got '2.5'"),
    ("/related/i1?k=1001", 400, "k must be <= 1000, got 1001"),
])
def test_a_bad_get_is_a_4xx_with_the_reason(client, path, status, reason):
    r = client.get(path)
    assert r.status_code == status and reason in r.json()["error"], r.text


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "the body is not JSON"),
    (b"[1, 2]", 'must be an object with "item_ids"'),
    (b'{"ids": ["i1"]}', 'must be an object with "item_ids"'),
    (b'{"item_ids": ["i1"], "queries": []}', 'must be an object with "item_ids"'),
    (b'{"item_ids": "i1"}', '"item_ids" must be a list of ids, got str'),
    (b'{"item_ids": ["i1"], "k": -3}', "k must be an integer >= 1, got -3"),
    (b'{"queries": ["i1"]}', '"queries" must be a list of objects'),
    (b'{"item_ids": ["i1", "i2"], "k": 1000, "pad": 0}', None),  # 2 x 1000 results: fine
])
def test_a_malformed_batch_is_a_400_with_the_reason_and_the_worker_keeps_serving(client, body, reason):
    r = client.post("/related", content=body, headers={"content-type": "application/json"})
    if reason is None:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and reason in r.json()["error"], r.text
    assert client.get("/related/i1").status_code == 200


def test_oversized_requests_are_refused(client):
    r = client.post("/related", json={"item_ids": ["i1"] * (MAX_QUERIES + 1)})
    assert r.status_code == 400 and f"at most {MAX_QUERIES}" in r.json()["error"]
    r = client.post("/related", json={"item_ids": ["i1"] * 101, "k": 1000})
    assert r.status_code == 400 and "more than 100,000 results" in r.json()["error"]
    r = client.post("/related", content=b'{"item_ids": ["' + b"x" * (1 << 20) + b'"]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_before_the_first_load_it_says_loading_and_reload_asks_the_loader():
    asked = []
    serving = Serving(on_reload=lambda: asked.append(1))
    with TestClient(create_app(serving)) as c:
        assert c.get("/health").status_code == 503 and c.get("/health").json()["status"] == "loading"
        assert c.get("/related/i1").status_code == 503
        r = c.post("/reload")
        assert r.status_code == 202 and r.json()["checking"] is True and asked == [1]
    with TestClient(create_app(Serving())) as c:  # a fixed source: nothing to reload
        assert c.post("/reload").status_code == 400


def test_the_answer_path_and_the_service_import_neither_torch_nor_airflow():
    blocked = "import sys\nfor m in ('torch', 'airflow', 'numba', 'gensim'): sys.modules[m] = None\n"
    for code in (blocked + "sys.modules['pandas'] = None\nimport pinsage.serve.http, pinsage.serve.recommend",
                 blocked + "import tasks.serve"):
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=subprocess_env())
        assert r.returncode == 0, r.stderr[-2000:]


# -- the service as a process, following the alias on a real MLflow server ------------------------------

def _register(server, art, name=NAME) -> str:
    import mlflow

    from tasks import mlflow_model

    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    exp = mlflow.get_experiment_by_name("svc") or mlflow.get_experiment(mlflow.create_experiment("svc"))
    with mlflow.start_run(experiment_id=exp.experiment_id):
        info = mlflow_model.log_recommender(name=name, model_dir=str(art["model_dir"]),
                                            embeddings_dir=str(art["embeddings"]), index_dir=str(art["index"]),
                                            items=str(art["items"]))
    return str(mlflow.register_model(info.model_uri, name).version)


def _start_service(tmp_path, server, poll: float, tag: str):
    port = free_port()
    log = open(tmp_path / f"service-{tag}.log", "wb")
    code = ("import sys\nsys.modules['torch'] = None  # the service must never need it\n"
            "from tasks.serve import main\n"
            f"raise SystemExit(main(['--model', 'models:/{NAME}@champion', '--port', '{port}', "
            f"'--poll-seconds', '{poll}']))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=subprocess_env({"MLFLOW_TRACKING_URI": server.url}), start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", tmp_path / f"service-{tag}.log"


def _wait_version(proc, url, version: str, log, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        try:
            h = requests.get(f"{url}/health", timeout=2)
            if h.status_code == 200 and h.json()["version"] == version:
                return h.json()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"version {version} not served after {timeout}s:\n{log.read_text()[-4000:]}")


class Loop(threading.Thread):
    """Bounded request loop on loopback: GET /related/{id} until stopped (at most 60 s)."""

    def __init__(self, url: str, ids):
        super().__init__(daemon=True)
        self.url, self.ids, self.seen, self.stop = url, list(ids), [], threading.Event()

    def run(self):
        s, rng, end = requests.Session(), np.random.default_rng(0), time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < end:
            q = self.ids[rng.integers(len(self.ids))]
            try:
                r = s.get(f"{self.url}/related/{q}", params={"k": 10}, timeout=10)
                body = r.json() if r.status_code == 200 else {}
                related = [x["item_id"] for x in body.get("related", [])]
                self.seen.append((r.status_code, body.get("version"), q, related))
            except requests.RequestException as err:
                self.seen.append((repr(err), None, q, []))


def _stop(proc):
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.mark.slow  # a tracking server, three registered versions and two service processes
def test_a_promotion_is_served_without_restart_or_a_failed_request(tmp_path):
    from reliability.conftest import MlflowServer

    server = MlflowServer(tmp_path / "mlflow")
    server.root.mkdir()
    server.start()
    procs = []
    try:
        arts = [synthetic_recommender(tmp_path / f"v{s}", 2000, dim=32, seed=s) for s in (1, 2)]
        cats = [Catalogue.from_dirs(a["index"], a["embeddings"], a["items"]) for a in arts]
        c = server.client()
        v1 = _register(server, arts[0])
        c.set_registered_model_alias(NAME, "champion", v1)

        # 1. told by the downstream DAG: a service that would poll only hourly swaps on POST /reload
        proc, url, log = _start_service(tmp_path, server, poll=3600, tag="reload")
        procs.append(proc)
        first = _wait_version(proc, url, v1, log)
        loop = Loop(url, arts[0]["ids"])
        loop.start()
        time.sleep(1.0)
        v2 = _register(server, arts[1])
        c.set_registered_model_alias(NAME, "champion", v2)
        assert requests.get(f"{url}/health", timeout=5).json()["version"] == v1  # not polled yet
        r = requests.post(f"{url}/reload", timeout=5)
        assert r.status_code == 202 and r.json()["serving_version"] == v1
        second = _wait_version(proc, url, v2, log, timeout=60)
        time.sleep(1.0)
        loop.stop.set()
        loop.join()
        assert proc.poll() is None and second["loaded_at"] >= first["loaded_at"] and second["n_items"] == 2000
        statuses = {s for s, *_ in loop.seen}
        assert statuses == {200}, [x for x in loop.seen if x[0] != 200][:5]  # no failed request in the swap
        versions = [v for _, v, *_ in loop.seen]
        assert versions == sorted(versions, key=[v1, v2].index) and versions[0] == v1 and versions[-1] == v2
        for _, v, q, got in loop.seen:  # each answer is the version's own, whole
            assert got == cats[[v1, v2].index(v)].answers([q], 10)[0].item_ids

        # 2. polling: a second service follows the alias back to version 1 within its poll interval
        proc2, url2, log2 = _start_service(tmp_path, server, poll=1, tag="poll")
        procs.append(proc2)
        _wait_version(proc2, url2, v2, log2)
        c.set_registered_model_alias(NAME, "champion", v1)
        _wait_version(proc2, url2, v1, log2, timeout=30)
        _wait_version(proc, url, v2, log)  # the hourly one has not looked yet

        # 3. a version that cannot be loaded is never served: the old one answers, /health says why
        broken = synthetic_recommender(tmp_path / "v3", 2000, dim=32, seed=3)
        table = broken["index"] / "answers.parquet"
        data = bytearray(table.read_bytes())
        data[len(data) // 2] ^= 0xFF  # damaged after its checksum was recorded
        table.write_bytes(bytes(data))
        bad = _register(server, broken)
        c.set_registered_model_alias(NAME, "champion", bad)
        deadline = time.monotonic() + 30
        while (h := requests.get(f"{url2}/health", timeout=5).json())["last_error"] is None:
            assert time.monotonic() < deadline, h
            time.sleep(0.3)
        assert h["version"] == v1 and h["status"] == "ok" and "answers.parquet: sha256" in h["last_error"], h
        assert requests.get(f"{url2}/related/i3", timeout=5).json()["related"]
    finally:
        for p in procs:
            _stop(p)
        server.stop()
