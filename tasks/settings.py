"""A run's configuration from the trigger form's parameters (the table in :mod:`pinsage.run.params`).

``params`` is what the form (or the REST API's ``conf``, or ``python -m tasks.prepare``) sends: the
table's parameter names, and ``overrides`` of dotted ``PipelineConfig`` keys, e.g.
``{"features.word2vec_dim": 16, "train.sampler.batch_size": 64}``. Environment:
``PINSAGE_DATA_ROOT``, the base for relative dataset paths (default: the repository root).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pinsage.run.config import PipelineConfig
from pinsage.run.dotted import ParamError
from pinsage.run.params import BY_NAME, check_settings, config_from_params
from tasks.errors import config_error
from tasks.runs import REPO_ROOT


def resolve_data_path(data: str) -> str:
    p = Path(os.path.expanduser(str(data)))
    if not p.is_absolute():
        p = Path(os.environ.get("PINSAGE_DATA_ROOT") or REPO_ROOT) / p
    return str(p.resolve())


def build_config(params: dict, out: str | Path, max_timestamp: int | None = None):
    """The checked PipelineConfig of a run; a refusal is a ConfigError naming the DAG parameter."""

    data = resolve_data_path(params.get("data") or BY_NAME["data"].default)
    try:
        return config_from_params(params, out, data=data, max_timestamp=max_timestamp)
    except ParamError as err:
        raise config_error(err) from None


def build_settings(params: dict) -> dict:
    """The run settings (registered model, experiment, gates) with the table's defaults, checked."""

    try:
        return check_settings(params)
    except ParamError as err:
        raise config_error(err) from None


def load_config(ref: dict):

    return PipelineConfig.from_dict(json.loads(Path(ref["config"]).read_text()))
