"""The errors steps raise on purpose, and which of them an orchestrator must not retry."""

from __future__ import annotations

from pinsage.data.dataset import DatasetError
from pinsage.run.dotted import ParamError
from pinsage.run.params import BY_KEY, BY_NAME, SEED_KEYS


class ConfigError(ValueError):
    """A parameter or override that can never work: retrying the step will not help."""


class MlflowUnavailable(RuntimeError):
    """The MLflow tracking server cannot be reached: transient, so the orchestrator retries the step."""


def permanent_errors() -> tuple[type[BaseException], ...]:
    """Exceptions an orchestrator should not retry (bad data, bad parameters, unimplemented engine)."""

    return (DatasetError, ConfigError, ParamError, NotImplementedError)


def param_name(param: str) -> str:
    """A refused parameter as the user wrote it: the DAG parameter, else the ``overrides`` key."""

    if param in SEED_KEYS:
        return "DAG parameter 'seed'"
    p = BY_KEY.get(param) or BY_NAME.get(param)
    if p is not None and p.form:
        return f"DAG parameter {p.name!r}" + ("" if p.name == p.key or p.is_setting else f" ({p.key})")
    return f"override {param!r}"


def config_error(err) -> ConfigError:
    """A :class:`pinsage.run.dotted.ParamError` as a ConfigError naming the DAG parameter."""
    out = ConfigError(f"{param_name(err.param)}: {err.message}")
    out.param = err.param
    return out
