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


SERVE_REQUIREMENTS = ROOT / "requirements-serve.txt"
RECOMMENDER_DOCKERFILE = ROOT / "docker" / "recommender.Dockerfile"
NOT_IN_THE_SERVICE = {"torch", "pandas", "mlflow", "apache-airflow"}  # and every apache-airflow-* distribution


def _name(requirement: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(re.split(r"[\[=<>!~;\s]", requirement.strip(), maxsplit=1)[0])


def _pins(path) -> dict[str, str]:
    """``{distribution: version}`` of a requirements file's lines (every line must pin with ``==``)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
            assert m, f"{path.name}: {line!r} is not pinned with =="
            pins[_name(m.group(1))] = m.group(3)
    return pins


def _closure(names) -> set[str]:
    """The installed distributions ``names`` need, theirs included (extras left out)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in md.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_name(req.name))
    return seen


def test_the_recommender_service_serves_the_champion_on_loopback_with_a_health_check(compose):
    services = compose["services"]
    rec = services["recommender"]
    assert rec["build"] == {"context": ".", "dockerfile": "docker/recommender.Dockerfile"}
    assert rec["image"] != services["mlflow"]["image"]  # its own image, not the Airflow one
    every_interface = ".".join(["0"] * 4)  # inside the container only: the port is published on loopback
    assert rec["command"] == ["python", "-m", "tasks.serve", "--model",
                              "models:/${PINSAGE_MODEL_NAME:-pinsage}@champion", "--host", every_interface,
                              "--port", "8000"]
    assert rec["ports"] == ["127.0.0.1:${RECOMMENDER_PORT:-8000}:8000"]  # loopback only
    test = " ".join(rec["healthcheck"]["test"])
    assert rec["healthcheck"]["test"][:2] == ["CMD", "python"] and "http://localhost:8000/health" in test  # no curl
    assert rec["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert rec["restart"] == "unless-stopped"
    worker = services["airflow-scheduler"]["environment"]
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert rec["environment"][key] == worker[key], key  # signs in as the workers do
    # the workers tell it about its own model's champions (dags/pinsage_serving.py)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["PINSAGE_RECOMMENDER_URL"] == "http://recommender:8000", name
        assert env["PINSAGE_RECOMMENDER_MODEL"] == "${PINSAGE_MODEL_NAME:-pinsage}", name
    header = COMPOSE.read_text().split("\n\n", 1)[0]
    assert "Recommender http://localhost:8000" in header
    assert re.search(r"^# RECOMMENDER_PORT=8000", (ROOT / ".env.example").read_text(), re.M)


def test_the_recommender_image_is_slim_non_root_and_carries_the_code():
    docker = RECOMMENDER_DOCKERFILE.read_text()
    lines = [line.strip() for line in docker.splitlines()]
    assert docker.startswith("#") and "FROM python:3.11-slim" in lines
    assert ("RUN pip install --no-cache-dir -r /opt/pinsage/requirements-serve.txt -c /opt/pinsage/constraints.txt"
            in lines)
    assert "COPY requirements-serve.txt constraints.txt /opt/pinsage/" in lines
    for part in ("pinsage", "tasks"):  # the service imports these packages only (see the next test)
        assert f"COPY {part} /opt/pinsage/{part}" in lines
    assert "COPY dags" not in docker and "requirements.txt " not in docker.replace("requirements-serve.txt", "")
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    # the code is an installed package in both images: no PYTHONPATH
    for image in (docker, (ROOT / "Dockerfile").read_text()):
        assert "PYTHONPATH" not in image
        assert "COPY --chown=airflow:0 pyproject.toml README.md /opt/pinsage/" in image or \
            "COPY pyproject.toml README.md /opt/pinsage/" in image
        assert re.search(r"^RUN pip install --no-cache-dir --no-deps (--no-build-isolation )?-e /opt/pinsage$",
                         image, re.M)


def test_the_serve_requirements_pull_in_no_torch_airflow_pandas_or_full_mlflow():
    import importlib.metadata as md

    pins = _pins(SERVE_REQUIREMENTS)
    assert {"mlflow-skinny", "numpy", "pyarrow", "faiss-cpu", "starlette", "uvicorn", "httptools", "uvloop",
            "orjson"} == set(pins)
    main = _pins(ROOT / "requirements.txt")
    assert pins["mlflow-skinny"] == main["mlflow"]  # the client of the server the stack runs
    for name, version in pins.items():
        assert md.version(name) == version, f"{name}=={version} in requirements-serve.txt, {md.version(name)} here"
        if name in main:
            assert main[name] == version, name
    for name in ("torch",):  # what constraints.txt pins, requirements-serve.txt does not ask for
        assert name in _pins(ROOT / "constraints.txt") and name not in pins
    # what installing it brings, as the installed distributions' metadata says
    closure = _closure(pins)
    assert not closure & NOT_IN_THE_SERVICE, closure & NOT_IN_THE_SERVICE
    assert not {n for n in closure if n.startswith("apache-airflow")}


SLIM_IMPORT = """
import importlib.abc, importlib.machinery, json, runpy, sys, sysconfig
allowed = set(json.loads(sys.argv[1]))
stdlib = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
PathFinder = importlib.machinery.PathFinder

class ImageFinder(importlib.abc.MetaPathFinder):
    \"\"\"The path finder, blind to top-level modules outside the standard library and ``allowed``.\"\"\"

    def find_spec(self, name, path=None, target=None):
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or "." in name or name in allowed:
            return spec  # a submodule comes with its package
        where = spec.origin or next(iter(spec.submodule_search_locations or []), None) or ""
        return spec if where.startswith(stdlib) and "-packages" not in where else None

sys.meta_path[:] = [ImageFinder() if f is PathFinder else f for f in sys.meta_path]
for name in sys.argv[2:]:
    if name.startswith("-"):
        sys.argv = [name[1:], "--help"]
        try:
            runpy.run_module(name[1:], run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            assert stop.code in (0, None), stop.code
    else:
        __import__(name)
print("@@LOADED@@" + json.dumps(sorted({k: getattr(m, "__file__", None) for k, m in list(sys.modules.items())
                                        if getattr(m, "__file__", None)}.items())))
"""


def _import_as_in_the_image(*modules: str):
    """Import ``modules`` (``-module``: run it with ``--help``) in a fresh interpreter that finds only
    the standard library, the distributions requirements-serve.txt installs, and pinsage/ + tasks/."""
    import importlib.metadata as md
    import json
    import subprocess
    import sys

    from .conftest import subprocess_env

    closure = _closure(_pins(SERVE_REQUIREMENTS))
    allowed = {top for top, dists in md.packages_distributions().items() if any(_name(d) in closure for d in dists)}
    allowed |= {"pinsage", "tasks"}  # what the image copies
    return subprocess.run([sys.executable, "-c", SLIM_IMPORT, json.dumps(sorted(allowed)), *modules],
                          env=subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_image_check_refuses_what_the_image_lacks():
    """The check below sees what the slim image would: its own libraries, not this machine's others."""
    for missing in ("torch", "pandas", "airflow", "sklearn"):
        p = _import_as_in_the_image(missing)
        assert p.returncode != 0 and f"No module named '{missing}'" in p.stderr, (missing, p.stderr[-2000:])
    p = _import_as_in_the_image("numpy", "pyarrow", "faiss", "mlflow", "starlette", "uvicorn", "orjson")
    assert p.returncode == 0, p.stderr[-3000:]


def _module_file(name: str):
    """The source file of the project module ``name`` (under the repository), or None."""
    path = ROOT.joinpath(*name.split("."))
    return next((f for f in (path.with_suffix(".py"), path / "__init__.py") if f.exists()), None)


def _service_imports(entry: str = "tasks.serve") -> tuple[dict, set[str]]:
    """What the service's code imports, anywhere in it (inside functions too): ``({project module: file},
    {other modules})``, followed through every project module it reaches."""
    import ast

    project, other, todo = {}, set(), [entry]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in project or path is None:
            continue
        project[name] = path
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module if not node.level else ".".join(
                    package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
            else:
                continue
            for imported in names:
                (todo.append if imported.split(".")[0] in ("pinsage", "tasks") else other.add)(imported)
    return project, other - {"__future__"}


def test_every_module_the_service_imports_is_in_its_image():
    """``python -m tasks.serve`` (the compose command) and every module its code imports, lazily imported
    ones included, load with only the slim image's libraries and the copied pinsage/ and tasks/."""
    if not (ROOT / "tasks" / "serve.py").exists():
        pytest.skip("tasks/serve.py (the recommender service) is not in this checkout yet")
    project, other = _service_imports()
    outside = {name: str(path) for name, path in project.items()
               if path.relative_to(ROOT).parts[0] not in ("pinsage", "tasks")}
    assert outside == {}, outside  # the image copies pinsage/ and tasks/ only
    assert {"mlflow", "numpy", "faiss", "starlette", "uvicorn"} <= {m.split(".")[0] for m in other}, other
    p = _import_as_in_the_image(*sorted(other), *sorted(project), "-tasks.serve")
    assert p.returncode == 0, p.stderr[-5000:]
    assert "usage:" in p.stdout and "--model" in p.stdout  # its command line parsed, --help answered
