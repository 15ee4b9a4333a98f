"""Shared pieces of the reliability tests: a real MLflow tracking server that can be stopped and
restarted on the same port with the same store; the helpers come from tests/orchestration."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from orchestration.conftest import ROOT, Store, community_data, small_params, subprocess_env, weak_params  # noqa: F401  (re-exported)
from orchestration.test_e2e_production import Processes, _free_port


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: runs and registry in SQLite, artifacts served from a folder."""

    def __init__(self, root: Path):
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs = Processes(root)
        self.starts = 0

    def start(self, timeout: float = 180) -> None:
        import requests

        self.starts += 1
        self.proc = self.procs.start(f"mlflow-{self.starts}", [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", (self.root / "artifacts").as_uri(), "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1"], subprocess_env(), self.root)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited with {self.proc.returncode}:\n"
                                     f"{self.procs.tail(f'mlflow-{self.starts}')}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"mlflow server not up after {timeout}s:\n{self.procs.tail(f'mlflow-{self.starts}')}")

    def stop(self) -> None:
        """SIGTERM to the server's process group (its workers too), then wait until the port is closed."""
        self.procs.stop_all()
        self.procs.procs.clear()

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)

    def env(self, runs: Path) -> dict:
        return {"MLFLOW_TRACKING_URI": self.url, "PINSAGE_RUNS_DIR": str(runs)}


@pytest.fixture(scope="package")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_env(mlflow_server, tmp_path, monkeypatch):
    """This process talks to the server (tasks run in-process): tracking URI, runs dir, short retries."""
    import mlflow

    # a stopped server must fail a request in seconds, not after minutes of MLflow's backoff
    env = dict(mlflow_server.env(tmp_path / "runs"), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
               MLFLOW_HTTP_REQUEST_TIMEOUT="60")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("MLFLOW_REGISTRY_URI", "PINSAGE_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(k, raising=False)
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    return env


from orchestration.conftest import store  # noqa: E402,F401  (the real SQLite MLflow store fixture)
