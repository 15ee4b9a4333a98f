"""Secrets never reach a log, a tag or an artifact: URL passwords and secret-looking keys are hidden."""

from __future__ import annotations

import re

SECRET_KEY = re.compile(
    r"(^|[._-])(password|passwd|pwd|secret|token|credentials?|api_?key|private_?key)($|[._-])", re.I)
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<pw>[^/@\s]+)@")


# ``password=hunter2``, ``api_key: abc``, ``"token": "abc"``, ``--secret xyz`` is not covered (no separator)
KEY_VALUE = re.compile(r"""(?P<key>["']?[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|credentials?|api_?key|"""
                       r"""private_?key)[A-Za-z0-9_.-]*["']?)(?P<sep>\s*[=:]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;&)}\]]+)""",
                       re.I)


def redact(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` and the value of any secret-looking
    ``key=value`` or ``key: value`` in ``text``."""
    text = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    return KEY_VALUE.sub(lambda m: f"{m['key']}{m['sep']}***", text)


def redact_obj(obj):
    """A JSON-like object with secret-looking keys and URL passwords hidden (for logged copies)."""
    if isinstance(obj, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) and v not in (None, "") else redact_obj(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v) for v in obj]
    return redact(obj) if isinstance(obj, str) else obj


def flat_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Flattened ``{dotted key: str}`` for MLflow params; secret-looking keys and URL passwords hidden."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif SECRET_KEY.search(k) and v not in (None, ""):
            out[key] = "***"
        else:
            out[key] = redact("None" if v is None else str(v))
    return out
