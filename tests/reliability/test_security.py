"""Safe defaults, checked statically over the repository's own files: authentication on and no
default secret in docker-compose.yaml, servers of the embedded path bound to 127.0.0.1, no pickle
when loading anything (``torch.load(weights_only=True)`` everywhere), every dependency pinned.

The dynamic halves (no secret in a real run's MLflow params/tags, no pickle in a registered model)
are in test_faults_mlflow.py; unauthenticated REST calls refused by a real Airflow: test_e2e_production.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

SKIP_DIRS = {".git", ".pinsage", "__pycache__", ".pytest_cache", "runs", "mlruns", "node_modules"}


def own_files(suffix: str) -> list[Path]:
    out = []
    for p in ROOT.rglob(f"*{suffix}"):
        rel = p.relative_to(ROOT)
        if not SKIP_DIRS & set(rel.parts) and not any(part.startswith(".venv") for part in rel.parts):
            out.append(p)
    return sorted(out)


# ---------------------------------------------------------------------------------------------
# docker-compose.yaml (the secrets-in-.env rule itself: tests/orchestration/test_compose.py)

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_airflow_authentication_is_on_with_the_password_required_from_env(compose):
    text = (ROOT / "docker-compose.yaml").read_text()
    services = compose["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        env = services[name]["environment"]
        # FAB: per-user accounts with roles (the simple auth manager is documented for development only)
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == (
            "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager")
        assert not [k for k in env if "SIMPLE_AUTH_MANAGER" in k], name
        assert str(env.get("AIRFLOW__API__EXPOSE_CONFIG", "False")).lower() == "false", name
    init_env = services["airflow-init"]["environment"]
    assert init_env["AIRFLOW_ADMIN_PASSWORD"].startswith("${AIRFLOW_ADMIN_PASSWORD:?")
    init = services["airflow-init"]["command"][0]
    assert "| airflow users create --username admin --role Admin" in init and "--password" not in init
    # no literal credential anywhere: every password in a URL is a required ${VAR:?...}
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), (user, password)
    for var in re.findall(r"\$\{([A-Z_]*(?:PASSWORD|SECRET|FERNET_KEY)[A-Z_]*)", text):
        assert f"${{{var}:?" in text and f"${{{var}:-" not in text, var


def test_compose_publishes_ports_on_127_0_0_1_only(compose):
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published.append(port)
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert len(published) >= 2  # the Airflow UI/API and MLflow


# ---------------------------------------------------------------------------------------------
# the embedded path (scripts, tests, code): servers bind 127.0.0.1

SERVER = re.compile(r"\b(mlflow\s+(ui|server)|airflow\s+(standalone|api-server|webserver))\b|"
                    r"\"(ui|server|standalone|api-server)\"")


def test_servers_started_by_the_project_bind_127_0_0_1():
    """Every place that starts (or tells the user to start) an MLflow or Airflow server binds it to
    127.0.0.1; 0.0.0.0 only inside a container whose port compose publishes on 127.0.0.1."""
    found = 0
    for path in own_files(".sh") + own_files(".py") + [ROOT / "README.md"]:
        text = path.read_text(errors="replace")
        rel = path.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), 1):
            if "0.0.0.0" in line and not str(rel).startswith("tests/reliability"):
                raise AssertionError(f"{rel}:{n} binds 0.0.0.0: {line.strip()}")
        # shell: a command line (with its continuation lines) that starts a server
        logical = re.sub(r"\\\n\s*", " ", text) if path.suffix == ".sh" else ""
        for line in logical.splitlines():
            if re.search(r"\b(mlflow\s+(ui|server)|airflow\s+(standalone|api-server))\b", line) and \
                    not line.lstrip().startswith("#"):
                found += 1
                ok = "--host 127.0.0.1" in line or "-h 127.0.0.1" in line or "AIRFLOW__API__HOST=127.0.0.1" in line \
                    or ("mlflow ui" in line and "--host" not in line)  # mlflow ui's default host is 127.0.0.1
                assert ok, f"{rel}: {line.strip()}"
        # Python: subprocess argument lists that start a server
        if path.suffix == ".py":
            for m in re.finditer(r'"(server|api-server|standalone)"', text):
                window = text[m.start():m.start() + 600]
                if '"mlflow"' in text[max(0, m.start() - 200):m.start()] or '"airflow"' in \
                        text[max(0, m.start() - 200):m.start()]:
                    found += 1
                    assert '"127.0.0.1"' in window or "127.0.0.1" in window, f"{rel}: {window[:200]}"
    assert found >= 3  # demo.sh's hints and the tests' own servers were seen


def test_mlflow_ui_default_host_is_loopback():
    from click.testing import CliRunner
    from mlflow.cli import cli

    out = CliRunner().invoke(cli, ["ui", "--help"]).output
    assert "default: 127.0.0.1" in out.replace("\n", " ").replace("  ", " ")


# ---------------------------------------------------------------------------------------------
# nothing we load is unpickled

UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"),
              ("cPickle", "loads"), ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("dill", "load"), ("dill", "loads"), ("marshal", "loads"), ("shelve", "open"),
              ("pd", "read_pickle"), ("pandas", "read_pickle"), ("yaml", "unsafe_load")}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute):
                base = f.value.id if isinstance(f.value, ast.Name) else (
                    f.value.attr if isinstance(f.value, ast.Attribute) else "")
                yield node, base, f.attr
            elif isinstance(f, ast.Name):
                yield node, "", f.id


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


def test_every_torch_load_is_weights_only_and_nothing_is_unpickled():
    problems, torch_loads = [], 0
    for path in own_files(".py"):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), filename=rel)
        for node, base, name in _calls(tree):
            where = f"{rel}:{node.lineno}"
            if (base, name) == ("torch", "load"):
                torch_loads += 1
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif (base, name) == ("np", "load") or (base, name) == ("numpy", "load"):
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}: np.load(allow_pickle=...)")
            elif (base, name) == ("yaml", "load"):
                loader = _kw(node, "Loader")
                if not (isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")):
                    problems.append(f"{where}: yaml.load without a safe loader")
            elif (base, name) in UNPICKLERS:
                # tests/data/test_dataset.py round-trips an exception it pickled itself (what multiprocessing
                # does); no artifact is ever unpickled
                if rel == "tests/data/test_dataset.py" and name == "loads":
                    continue
                problems.append(f"{where}: {base}.{name}")
    assert problems == []
    assert torch_loads >= 5  # the scan really saw the loads (model, checkpoint, VGG weights, tests)


def test_artifact_loaders_refuse_pickles(tmp_path):
    """The loaders themselves: a pickled object where a state dict or arrays are expected is refused."""
    import pickle

    import numpy as np
    import torch

    from pinsage.model.network import load_model
    from pinsage.util.io import read_npz

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    (tmp_path / "model.pt").write_bytes(b"")
    torch.save({"w": Payload()}, tmp_path / "model.pt")
    (tmp_path / "model_config.json").write_text('{"input_dim": 4, "n_items": 3}')
    with pytest.raises(pickle.UnpicklingError):
        load_model(tmp_path)
    np.savez(tmp_path / "a.npz", x=np.array([Payload()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npz(tmp_path / "a.npz")


# ---------------------------------------------------------------------------------------------
# pinned dependencies

REQ = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[0-9][A-Za-z0-9.+!_-]*$")


@pytest.mark.parametrize("name", ["requirements.txt", "constraints.txt"])
def test_every_dependency_is_pinned(name):
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines()]
    reqs = [line for line in lines if line]
    assert reqs
    assert [r for r in reqs if not REQ.match(r)] == []
    if name == "requirements.txt":
        assert {r.split("==")[0].split("[")[0].lower() for r in reqs} >= {"torch", "mlflow", "apache-airflow",
                                                                        "faiss-cpu", "pyarrow", "pandas"}
    docker = (ROOT / "Dockerfile").read_text()
    assert "-r /opt/pinsage/requirements.txt -c /opt/pinsage/constraints.txt" in docker
    assert re.search(r"^FROM [^\s:]+:[0-9][^\s]*", docker, re.M)  # a versioned base image, not :latest
