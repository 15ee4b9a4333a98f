"""What every stage step shares: its config and run directory, its MLflow step, its record, its CLI.

A stage step is a transaction over one stage of :mod:`pinsage.pipeline`::

    def run(ref, prepare_dir=None):
        with stage_step(ref, "graph", handed={"prepare": prepare_dir}) as s:
            out = pipeline.graph(s.cfg, log=s.log)
            s.log_artifacts(out["graph"], "graph")
            s.result = {"graph": out["graph"]}
        return s.result

``handed`` maps a :class:`~pinsage.run.layout.RunDir` attribute to the path the upstream task handed
over (None: not handed); each must exist and be the run directory's own, checked before anything
is marked on the MLflow run. The result is written to ``<run_dir>/steps/<name>.json`` only when the
block succeeds, so a failed step leaves no record for the next one to trust.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pinsage.run.layout import RunDir
from tasks import tracking
from tasks.runs import handed as check_handed
from tasks.runs import read_ref, write_step_record
from tasks.settings import load_config


def stage_logger(name: str) -> Callable[[str], None]:
    lg = logging.getLogger(f"pinsage.tasks.{name}")
    return lambda message: lg.info("%s", message)


@dataclass
class Step:
    ref: dict
    name: str
    cfg: Any  # PipelineConfig
    run: Any  # RunDir
    client: Any = None  # MlflowClient, while the step is open
    result: dict = field(default_factory=dict)

    @property
    def mlflow_run_id(self) -> str:
        return self.ref["mlflow_run_id"]

    def log(self, message: str) -> None:
        stage_logger(self.name)(message)

    def log_artifacts(self, local, artifact_path: str | None = None) -> None:
        tracking.log_artifacts(self.client, self.mlflow_run_id, local, artifact_path)


@contextlib.contextmanager
def stage_step(ref: dict, name: str, handed: dict[str, Any] | None = None,
               check: Callable[[Step], None] | None = None) -> Iterator[Step]:
    """Open step ``name`` of the run ``ref`` (see the module docstring); yields the :class:`Step`.
    ``check(step)``: refuses inputs that can never work, before the MLflow run is marked."""

    cfg = load_config(ref)
    run = RunDir(cfg.out)
    for attr, path in (handed or {}).items():
        check_handed(path, getattr(run, attr), attr.replace("_", " "))
    s = Step(ref, name, cfg, run)
    if check is not None:
        check(s)
    with tracking.step(ref, name) as c:
        s.client = c
        yield s
    write_step_record(ref, name, s.result)


def main_for(run_fn: Callable[..., dict], doc: str, *flags: str) -> Callable[..., int]:
    """``python -m tasks.<step> --run-dir RUN_DIR [--flag VALUE ...]``: ``flags`` are ``run_fn``'s
    optional keyword arguments (``"model_uri"`` -> ``--model-uri``)."""
    def main(argv=None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
        p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--run-dir", required=True, help="run directory written by `python -m tasks.prepare`")
        for name in flags:
            p.add_argument("--" + name.replace("_", "-"), dest=name, default=None)
        args = p.parse_args(argv)
        kwargs = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
        print(json.dumps(run_fn(read_ref(args.run_dir), **kwargs), indent=2))
        return 0
    return main
