"""Tell the recommender service that ``champion`` moved: ``POST {PINSAGE_RECOMMENDER_URL}/reload``.

The service (``python -m tasks.serve --model models:/NAME@champion``) follows the alias by polling the
registry; this call only makes it check now instead of at its next poll. The DAG
``pinsage_champion_reload`` (``dags/pinsage_serving.py``) calls :func:`on_champion` with the
``pinsage_champion`` asset events that triggered it. Stdlib only.

Environment (on the Airflow workers):

* ``PINSAGE_RECOMMENDER_URL``: the service's base URL, e.g. ``http://recommender:8000``. Unset: nothing
  is sent (the service still picks the new champion up at its next poll).
* ``PINSAGE_RECOMMENDER_MODEL``: the registered model the service serves. When set, only events of that
  model are passed on (a champion of another model is not its business); unset: every event.

A non-2xx answer (redirects included) or a connection error raises :class:`ReloadError`, so Airflow
retries the task. The log names the service's scheme, host and port only.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

log = logging.getLogger("pinsage.tasks.recommender_reload")

URL_ENV = "PINSAGE_RECOMMENDER_URL"
MODEL_ENV = "PINSAGE_RECOMMENDER_MODEL"
TIMEOUT_S = 10.0


class ReloadError(RuntimeError):
    """The service did not accept the reload (non-2xx) or could not be reached: transient, retried."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 3xx is an answer of its own, not followed
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def where(url: str) -> str:
    """What a log may say of the service's URL: scheme, host and port (never credentials or a path)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _field(event, name: str, default=None):
    return event.get(name, default) if isinstance(event, Mapping) else getattr(event, name, default)


def champion_events(events: Iterable, model_name: str | None = None) -> list[dict]:
    """The events as ``{"model_name", "version", "timestamp"}``, oldest first; only ``model_name``'s when given.

    ``events`` are Airflow asset events (``.extra``, ``.timestamp``) or mappings with those keys.
    """
    out = []
    for event in events:
        extra = _field(event, "extra") or {}
        version = extra.get("version")
        out.append({"model_name": extra.get("model_name"), "version": None if version is None else str(version),
                    "timestamp": _field(event, "timestamp")})
    out.sort(key=lambda e: (e["timestamp"] is not None, e["timestamp"]))
    return [e for e in out if model_name is None or e["model_name"] == model_name]


def request_reload(url: str, version: str | None = None, timeout_s: float = TIMEOUT_S) -> dict:
    """POST ``{url}/reload`` (body ``{"version": version}``, or ``{}``); the service's JSON answer.

    Raises :class:`ReloadError` on a non-2xx answer or when the service cannot be reached.
    """
    endpoint = url.rstrip("/") + "/reload"
    body = json.dumps({"version": version} if version is not None else {}).encode()
    req = urllib.request.Request(endpoint, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        raise ReloadError(f"the recommender at {where(url)} answered HTTP {err.code} to POST /reload") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ReloadError(f"the recommender at {where(url)} cannot be reached: {reason}") from None
    if not 200 <= status < 300:
        raise ReloadError(f"the recommender at {where(url)} answered HTTP {status} to POST /reload")
    try:
        answer = json.loads(text) if text else {}
    except ValueError:
        answer = {}
    return answer if isinstance(answer, dict) else {}


def on_champion(events: Iterable, environ: Mapping[str, str] | None = None) -> dict:
    """React to ``pinsage_champion`` events: tell the service about the newest one, when configured.

    Returns ``{"model_name", "version", "told_recommender"}`` (the newest event's, or the served
    model's newest). With no event at all (a run triggered by hand) the service is asked to check
    the registry now, without a version.
    """
    env = os.environ if environ is None else environ
    url, served = env.get(URL_ENV, "").strip(), env.get(MODEL_ENV, "").strip() or None
    every = champion_events(events)
    ours = [e for e in every if served is None or e["model_name"] == served]
    newest = (ours or every or [{"model_name": served, "version": None}])[-1]
    result = {"model_name": newest["model_name"], "version": newest["version"], "told_recommender": False}
    what = (f"version {newest['version']} of {newest['model_name']} took champion" if every
            else "no champion event (a run by hand)")
    if every and not ours:
        log.info("%s; the recommender serves %s: nothing to tell", what, served)
        return result
    if not url:
        log.info("%s; %s is not set: the recommender picks it up at its next poll of the registry", what, URL_ENV)
        return result
    answer = request_reload(url, newest["version"])
    log.info("%s; the recommender at %s is checking the registry (model %s, serving version %s)", what,
             where(url), answer.get("model", "?"), answer.get("serving_version", "?"))
    return dict(result, told_recommender=True)
