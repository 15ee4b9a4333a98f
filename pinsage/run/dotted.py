"""Dotted config keys (``"train.sampler.batch_size"``): the one way a nested setting is read or set.

Stdlib only, so the DAG file can use the parameter table that builds on it without importing torch.
"""

from __future__ import annotations

from typing import Any


class ParamError(ValueError):
    """A parameter that can never work (a retry will not help). ``param``: its dotted config key or name."""

    def __init__(self, param: str, message: str):
        self.param = param
        self.message = message
        super().__init__(f"parameter {param!r}: {message}")

    def __reduce__(self):  # keep the attributes across pickling (multiprocessing, Airflow)
        return (type(self), (self.param, self.message))


def get_dotted(node: Any, key: str) -> Any:
    """``get_dotted(cfg, "train.sampler.batch_size")``, on dataclasses or on their ``to_dict`` form."""
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def set_dotted(d: dict, key: str, value: Any) -> None:
    """Set ``key`` in the nested dict ``d`` (a config's ``to_dict``), refusing unknown keys and values
    of another type than the one there (an int is accepted for a float)."""
    *parents, leaf = key.split(".")
    node = d
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ParamError(key, "unknown config key")
        node = node[part]
    if leaf not in node or isinstance(node[leaf], dict):
        raise ParamError(key, "unknown config key")
    old = node[leaf]
    if old is not None and value is not None:
        if isinstance(old, bool):
            ok = isinstance(value, bool)
        elif isinstance(old, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(old, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ParamError(key, f"expects {type(old).__name__}, got {value!r}")
    node[leaf] = value
