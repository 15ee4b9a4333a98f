"""Shared helpers for the orchestration tests: small datasets, small configs, a real MLflow store."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from conftest import make_community_dataset  # noqa: E402  (tests/conftest.py)

# The form parameters of a small run (~10 s): every stage runs, nothing is big.
# cold_share 0: these tests compare a strong small config against a deliberately weak one on a 60-item
# toy trained 3 epochs, where the cold twins' second task costs the strong model its margin (validation
# 0.1320 against the weak config's 0.1345 with twins on). The cold-start code path is the same either
# way; the twins' effect is tested in tests/serve/test_coldstart.py and measured in docs/figures.md.
SMALL_OVERRIDES = {"features.word2vec_dim": 16, "features.word2vec_epochs": 5, "train.num_workers": 0,
                   "train.warmup_steps": 5, "train.sampler.batch_size": 64,
                   "train.sampler.n_shared_negatives": 20, "pixie_walks_per_item": 200,
                   "train.sampler.cold_share": 0.0}


def small_params(data, **changes) -> dict:
    params = {"data": str(data), "epochs": 3, "hidden_dim": 16, "output_dim": 8, "top_t": 5,
              "walks_per_item": 60, "learning_rate": 0.003, "seed": 0, "device": "cpu",
              "promotion_margin": 0.0, "overrides": dict(SMALL_OVERRIDES)}
    overrides = changes.pop("overrides", {})
    params.update(changes)
    params["overrides"].update(overrides)
    return params


def weak_params(data, **changes) -> dict:
    """Deliberately weaker: 1-d text features, one epoch at a negligible learning rate, T=1."""
    return small_params(data, epochs=1, learning_rate=1e-6, top_t=1, walks_per_item=10,
                        overrides={"features.word2vec_dim": 1, "features.word2vec_epochs": 1}, **changes)


def community_data(path: Path) -> Path:
    return make_community_dataset(path, n_items=60, n_contexts=120)


def with_new_items(data: Path, out: Path) -> tuple[Path, list[str]]:
    """The dataset plus three "a"-community items, each engaged in three "a" contexts (even ones)."""
    import shutil

    shutil.copytree(data, out)
    items = pd.read_csv(out / "items.csv", dtype=str)
    new = [f"new{k}" for k in range(3)]
    items = pd.concat([items, pd.DataFrame({"item_id": new, "title": [f"new item {k}" for k in range(3)],
                                            "text": ["alpha apple w1"] * 3})], ignore_index=True)
    items.to_csv(out / "items.csv", index=False)
    inter = pd.read_csv(out / "interactions.csv", dtype={"context_id": str, "item_id": str})
    rows = [{"context_id": f"u{c}", "item_id": i, "timestamp": int(inter["timestamp"].max()) + 10 + c}
            for k, i in enumerate(new) for c in (2 * k, 2 * k + 2, 2 * k + 4)]
    pd.concat([inter, pd.DataFrame(rows)], ignore_index=True).to_csv(out / "interactions.csv", index=False)
    return out, new


class Store:
    """A real MLflow tracking + registry store (SQLite) and a runs directory, under one folder."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {"MLFLOW_TRACKING_URI": self.uri, "PINSAGE_MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
                    "PINSAGE_RUNS_DIR": str(root / "runs")}

    def client(self):
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(self.uri)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def _activate(store: Store, mp: pytest.MonkeyPatch) -> Store:
    import mlflow

    for k, v in store.env.items():
        mp.setenv(k, v)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_registry_uri(store.uri)
    return store


@pytest.fixture
def store(tmp_path, monkeypatch) -> Store:
    return _activate(Store(tmp_path / "store"), monkeypatch)


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield _activate(Store(tmp_path_factory.mktemp("store")), mp)
    finally:
        mp.undo()


def subprocess_env(extra: dict | None = None) -> dict:
    """The environment for child processes: this one without Airflow/MLflow settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "MLFLOW_", "PINSAGE_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra or {})
    return env


class RecordingServer:
    """An HTTP server on 127.0.0.1 (a thread of this process) that records each POST (path and JSON
    body) and answers ``status`` with ``headers``, after ``delay_s``: the recommender's ``/reload`` as
    the reload DAG's task sees it."""

    def __init__(self, status: int = 202, headers: dict | None = None, delay_s: float = 0.0):
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.requests.append({"path": self.path, "body": json.loads(body) if body else None,
                                          "content_type": self.headers.get("Content-Type")})
                time.sleep(delay_s)
                answer = json.dumps({"model": "pinsage", "serving_version": "1", "checking": True}).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
