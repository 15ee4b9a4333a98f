"""docker-compose.yaml, Dockerfile and .env.example: the production stack's shape, checked statically.

(No Docker engine runs here; test_e2e_production.py runs the same topology as real processes.)
"""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import ROOT

COMPOSE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_the_stack_needs_with_health_checks(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "airflow-init", *AIRFLOW_SERVICES} <= set(services)
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name
        assert services[name]["healthcheck"]["test"], name
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name in ("postgres", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    assert "airflow db migrate" in services["airflow-init"]["command"][0]
    assert "airflow pools set pinsage_train" in services["airflow-init"]["command"][0]  # the DAG's train pool
    mlflow = " ".join(services["mlflow"]["command"])
    assert "postgresql" in mlflow and "--artifacts-destination" in mlflow and "--serve-artifacts" in mlflow
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in declared, volume


def test_no_secret_in_the_file_and_every_required_value_documented():
    text = COMPOSE.read_text()
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}", text))
    assert {"POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
            "AIRFLOW_ADMIN_PASSWORD"} <= required
    every = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    with_default = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):-[^}]*\}", text))
    assert every == required | with_default  # nothing silently empty
    for secret in required:
        assert not re.search(rf"\$\{{{secret}:-", text), f"{secret} must not have a default"
    for line in text.splitlines():  # secret-looking keys only ever take ${...}
        m = re.match(r"\s*([A-Z0-9_]*(PASSWORD|SECRET|FERNET_KEY)[A-Z0-9_]*):\s*(.+)$", line)
        if m and not m.group(1).endswith("_FILE"):
            assert m.group(3).strip().startswith("${"), line
    example = (ROOT / ".env.example").read_text()
    for var in required:
        assert re.search(rf"^{var}=\s*$", example, re.M), f"{var} missing (or pre-filled) in .env.example"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_the_image_carries_the_code_and_pinned_requirements():
    docker = (ROOT / "Dockerfile").read_text()
    assert docker.startswith("#") and "FROM apache/airflow:3.3.2" in docker
    assert "-r /opt/pinsage/requirements.txt -c /opt/pinsage/constraints.txt" in docker
    for part in ("pinsage", "tasks", "dags"):
        assert f"COPY --chown=airflow:0 {part} /opt/pinsage/{part}" in docker
    assert "download.pytorch.org/whl/cpu" in docker  # never the CUDA torch


def test_ray_profile_is_optional_and_authenticated(compose):
    services = compose["services"]
    for name in ("ray-head", "ray-worker"):
        assert services[name]["profiles"] == ["ray"], name  # not started by a plain `docker compose up`
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token", name
        assert "ports" not in services[name], name  # reachable only inside the compose network
    head = " ".join(services["ray-head"]["command"])
    assert "--head" in head and "--ray-client-server-port=10001" in head
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
