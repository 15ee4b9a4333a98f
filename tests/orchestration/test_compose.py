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
    assert "--artifacts-destination" in mlflow and "--serve-artifacts" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(".") or source in declared, volume


def test_no_secret_in_the_file_and_every_required_value_documented():
    text = COMPOSE.read_text()
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):\?[^}]*\}", text))
    assert {"POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
            "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"} <= required
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


def test_the_tracking_server_signs_everyone_in_and_the_workers_carry_credentials(compose):
    services = compose["services"]
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert "./docker/mlflow-auth.ini:" + env["MLFLOW_AUTH_CONFIG_PATH"] + ":ro" in mlflow["volumes"]
    auth = (ROOT / "docker" / "mlflow-auth.ini").read_text()
    assert "default_permission = READ" in auth and "admin_password" not in auth.replace("# ", "")
    for name in AIRFLOW_SERVICES:
        worker = services[name]["environment"]
        assert worker["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert worker["MLFLOW_TRACKING_PASSWORD"] == env["MLFLOW_AUTH_ADMIN_PASSWORD"]


def test_no_password_on_a_command_line_and_no_service_as_the_database_superuser(compose):
    for name, service in compose["services"].items():
        command = service.get("command", [])
        text = " ".join(command) if isinstance(command, list) else str(command)
        # a value compose splices into the arguments (visible in every local user's `ps`), or a URL password
        assert not re.search(r"(?<!\$)\$\{[A-Z0-9_]*(PASSWORD|SECRET|TOKEN)", text), name
        assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), name
    conn = compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD:?")
    assert "postgres:${" not in COMPOSE.read_text().replace("POSTGRES_PASSWORD:", "")
    # docker/postgres-init.sh itself runs against a real server in test_e2e_production.py


def test_the_ray_services_refuse_to_start_without_a_token(compose, tmp_path):
    import subprocess

    for name in ("ray-head", "ray-worker"):
        entry = [part.replace("$$", "$") for part in compose["services"][name]["entrypoint"]]  # compose's escape
        fake = tmp_path / "ray"
        fake.write_text("#!/bin/sh\necho started \"$@\"\n")
        fake.chmod(0o755)
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
        refused = subprocess.run([*entry, "start"], env={**env, "RAY_AUTH_TOKEN": ""}, capture_output=True, text=True)
        assert refused.returncode == 1 and "set RAY_AUTH_TOKEN in .env" in refused.stderr, name
        started = subprocess.run([*entry, "start", "--block"], env={**env, "RAY_AUTH_TOKEN": "t"},
                                 capture_output=True, text=True)
        assert started.returncode == 0 and started.stdout.strip() == "started start --block", name
