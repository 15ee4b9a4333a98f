"""The champion gate when the MLflow server fails while it decides: a real server behind a real HTTP
proxy that answers 503 for artifact requests (what a server whose artifact store is down returns).

The gate must not decide on the weaker rule (recorded MRRs from other pairs) because the champion's
embeddings could not be fetched: it fails, leaves ``champion`` and the candidate's tags as they were,
and the retry, once the server answers again, decides like with like.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests

from tasks import registry

pytestmark = pytest.mark.slow


class FaultProxy:
    """Forwards every request to ``upstream``; while ``failing``, artifact requests get a 503."""

    def __init__(self, upstream: str):
        self.upstream, self.failing, self.refused = upstream, False, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.failing and "/mlflow-artifacts/" in self.path:
                    proxy.refused += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                     timeout=60)
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(mlflow_server, server_env, monkeypatch):
    import mlflow

    p = FaultProxy(mlflow_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", p.url)
    mlflow.set_tracking_uri(p.url)
    mlflow.set_registry_uri(p.url)
    try:
        yield p
    finally:
        p.close()


def _served_version(c, name: str, mrr: float, ids, vectors, tmp_path) -> str:
    """A version whose artifacts live on the server (served through its artifact endpoints)."""
    from pinsage.export.embeddings import write_embeddings

    exp = c.get_experiment_by_name("gate-faults") or c.get_experiment(c.create_experiment("gate-faults"))
    run = c.create_run(exp.experiment_id)
    c.log_metric(run.info.run_id, "validation_mrr", mrr)
    src = tmp_path / run.info.run_id / "model"
    src.mkdir(parents=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    write_embeddings(src / "artifacts" / "embeddings", ids, vectors)
    c.log_artifacts(run.info.run_id, str(src), "model")
    try:
        c.get_registered_model(name)
    except Exception:
        c.create_registered_model(name)
    mv = c.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                tags={"pinsage.promotion": "candidate", "validation_mrr": repr(mrr)})
    return str(mv.version)


def test_a_5xx_while_fetching_the_champions_embeddings_fails_the_gate_and_the_retry_decides(proxy, tmp_path):
    from mlflow import MlflowClient
    from orchestration.test_registry import _clusters, _run_dir

    name = "gate-5xx"
    c = MlflowClient(tracking_uri=proxy.url, registry_uri=proxy.url)
    ids, good, pairs = _clusters()
    noise = np.random.default_rng(1).standard_normal(good.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # the champion's recorded MRR is high, but it ranks this run's pairs at chance: only the
    # like-with-like comparison promotes the candidate; the recorded one (0.30 < 0.99) would not
    v1 = _served_version(c, name, 0.99, ids, noise, tmp_path)
    assert registry.gate(c, name, v1, 0.99, margin=0.0)[0]
    v2 = _served_version(c, name, 0.30, ids, good, tmp_path)
    out = _run_dir(tmp_path, ids, good, pairs)

    proxy.failing = True
    with pytest.raises(Exception) as failed:
        registry.gate(c, name, v2, 0.30, margin=0.0, out=out)
    assert proxy.refused > 0 and "503" in str(failed.value), failed.value
    proxy.failing = False
    assert str(c.get_model_version_by_alias(name, "champion").version) == v1
    tags = c.get_model_version(name, v2).tags
    assert tags["pinsage.promotion"] == "candidate" and "pinsage.promotion_reason" not in tags  # nothing decided

    promoted, reason = registry.gate(c, name, v2, 0.30, margin=0.0, out=out)  # Airflow's retry
    assert promoted and f"beats champion version {v1}" in reason and "of this run's 40 validation pairs" in reason
    assert str(c.get_model_version_by_alias(name, "champion").version) == v2
