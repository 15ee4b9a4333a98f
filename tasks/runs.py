"""Run references, run directories and step records: how steps find each other's outputs.

A *run reference* (``ref``) is the small dict a DAG run hands from step to step (through XCom, or
``<run_dir>/run.json`` on the command line)::

    {"run_key": "manual__2025-01-01T00:00:00+00:00", "dag_id": "pinsage_daily",
     "run_dir": "/abs/.pinsage/runs/pinsage_daily/manual__2025-01-01T00-00-00-00-00",
     "config": "<run_dir>/config.json", "mlflow_run_id": "…", "experiment_id": "…",
     "settings": {"model_name": "pinsage", "promotion_margin": 0.0, …}}

Each step records what it returned in ``<run_dir>/steps/<step>.json``, so the next one also runs
from the command line. Environment: ``PINSAGE_RUNS_DIR`` (default ``<repo>/.pinsage/runs``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pinsage.util.io import write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".pinsage"
RUN_JSON = "run.json"


def safe_name(run_key: str) -> str:
    """A run id as a directory name: ``manual__2025-01-01T00:00:00+00:00`` -> ``manual__2025-01-01T00-00-00-00-00``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_key).strip(".-")
    if not name:
        raise ValueError(f"run id {run_key!r} has no usable characters")
    return name[:200]


def runs_dir() -> Path:
    return Path(os.environ.get("PINSAGE_RUNS_DIR") or STATE_DIR / "runs").resolve()


def run_dir_for(dag_id: str, run_key: str) -> Path:
    return runs_dir() / safe_name(dag_id) / safe_name(run_key)


def read_ref(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m tasks.prepare` first")
    return json.loads(path.read_text())


def step_record_path(ref: dict, step: str) -> Path:
    return Path(ref["run_dir"]) / "steps" / f"{step}.json"


def write_step_record(ref: dict, step: str, result: dict) -> None:

    write_json(step_record_path(ref, step), result)


def read_step_record(ref: dict, step: str) -> dict:
    path = step_record_path(ref, step)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run step {step!r} first")
    return json.loads(path.read_text())


def require(path: str | Path, what: str) -> Path:
    """An input handed by an upstream step must exist (fail fast with a clear message)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist: has the upstream step run?")
    return p


def handed(path: str | Path | None, expected: Path, what: str) -> Path:
    """A path handed by an upstream step (None: not handed, the run directory's own) must exist and be
    the run directory's: the pinsage stages read :class:`~pinsage.run.layout.RunDir`, not loose paths."""
    if path is None:
        path = expected
    h = require(path, what).resolve()
    if h != Path(expected).resolve():
        raise ValueError(f"{what} {h} is not the run directory's {expected}")
    return h
