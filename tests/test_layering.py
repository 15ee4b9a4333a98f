"""The library's groups only look down: the paper's parts at the bottom, engines and serving above
them, the stages and the command line on top; and the library never reaches into the orchestration.
In ``tasks/`` the steps share the modules made for sharing (the registry, tracking, run references)
and never reach into one another."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINSAGE = ROOT / "pinsage"

# group -> level: a module may import its own group and any group of a lower level.
LEVELS = {
    "util": 0,
    "data": 1,
    "features": 2, "graph": 2,
    "model": 3, "eval": 3,
    "export": 4,
    "run": 5,
    "engines": 6, "serve": 6,
    "top": 7,  # pipeline.py, report.py, cli.py, ddp.py, __main__.py, experiments/
}
TOP = {"experiments"}
NEVER = ("tasks", "dags", "airflow", "mlflow")  # the orchestration and its services


def group_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LEVELS and parts[1] not in TOP:
        return parts[1]
    return "top"


def imports(path: Path, package: str = "pinsage") -> list[tuple[int, str]]:
    """(line, imported module) of every import in the file, function-level ones included;
    ``from {package} import x`` reads as ``{package}.x``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the layering reads absolute ones)"
            if node.module == package:  # from pinsage import pipeline
                out += [(node.lineno, f"{package}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(ROOT).with_suffix("").parts), p) for p in sorted(PINSAGE.rglob("*.py"))]


def test_every_subpackage_has_a_level():
    packages = {p.name for p in PINSAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LEVELS) | TOP
    assert packages == (set(LEVELS) - {"top"}) | TOP  # no level names a package that is gone


def upward_imports(files) -> list[str]:
    """Imports of ``(module, path)`` files that reach a group at their own level or above (not their own)."""
    wrong = []
    for module, path in files:
        mine = group_of(module)
        for line, imported in imports(path):
            if not imported.startswith("pinsage."):
                continue
            theirs = group_of(imported)
            if theirs != mine and LEVELS[theirs] >= LEVELS[mine]:
                wrong.append(f"{path.name}:{line} ({mine}) imports {imported} ({theirs})")
    return wrong


def orchestration_imports(files) -> list[str]:
    return [f"{path.name}:{line} imports {imported}" for _, path in files
            for line, imported in imports(path) if imported.split(".")[0] in NEVER]


def test_groups_only_import_downwards():
    assert upward_imports(modules()) == []


def test_the_library_never_imports_the_orchestration():
    assert orchestration_imports(modules()) == []


def test_the_checks_see_a_violation(tmp_path):
    """Both checks on a made-up model module that reaches up into serving and out to MLflow."""
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nfrom pinsage.graph import walks\n\n\ndef f():\n"
                   "    from pinsage.serve import coldstart\n    import mlflow.pyfunc\n")
    files = [("pinsage.model.bad", bad)]
    assert upward_imports(files) == ["bad.py:6 (model) imports pinsage.serve (serve)"]
    assert orchestration_imports(files) == ["bad.py:7 imports mlflow.pyfunc"]


# tasks/: the pipeline's steps, each run by one DAG task; only tasks.flow (the whole chain in one
# process) may import them. Everything else in tasks/ is made to be shared.
TASKS = ROOT / "tasks"
STEPS = {"prepare", "features", "graph", "neighbors", "train", "export", "index", "evaluate", "register", "refresh"}
CHAINS = {"flow"}


def task_modules() -> list[tuple[str, Path]]:
    return [(f"tasks.{p.stem}", p) for p in sorted(TASKS.glob("*.py")) if p.stem != "__init__"]


def step_imports(files) -> list[str]:
    """Imports of a step module (``tasks.register``, ``from tasks import refresh``) by anything but a chain."""
    wrong = []
    for module, path in files:
        if module.split(".")[1] in CHAINS:
            continue
        for line, imported in imports(path, package="tasks"):
            parts = imported.split(".")
            if parts[0] == "tasks" and len(parts) > 1 and parts[1] in STEPS and parts[1] != module.split(".")[1]:
                wrong.append(f"{path.name}:{line} imports {imported}")
    return wrong


def test_every_step_is_known_and_the_steps_never_import_each_other():
    assert STEPS <= {m.split(".")[1] for m, _ in task_modules()}
    assert step_imports(task_modules()) == []


def test_tasks_import_airflow_only_where_a_dag_callback_runs():
    found = [f"{p.name}:{line}" for _, p in task_modules() for line, imported in imports(p)
             if imported.split(".")[0] == "airflow"]
    assert len(found) == 1 and found[0].startswith("notify.py:"), found  # the failure notifier's Connection


def test_the_step_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tasks import registry\nfrom tasks import refresh\nimport tasks.register\n")
    assert step_imports([("tasks.bad", bad)]) == ["bad.py:2 imports tasks.refresh", "bad.py:3 imports tasks.register"]
