"""The recommender's HTTP front end: related items from the catalogue it currently holds.

An ASGI app (Starlette; run by uvicorn) over a :class:`Serving` holder. Whoever loads catalogues (a
run directory: ``python -m pinsage serve --run OUT``; a registered model's alias, followed:
``python -m tasks.serve --model models:/NAME@champion``) calls :meth:`Serving.swap` with a new
:class:`Loaded`; a request reads the holder once when it starts, so the old version answers every
request that began before the swap and the new one every request after it, with no lock and no
window where nothing answers.

    GET  /health                  200 {"status": "ok", "model", "alias", "version", "loaded_at",
                                       "n_items", "answer_k", "source", "last_check", "last_error"}
                                  503 {"status": "loading", ...} until a catalogue is loaded
    GET  /related/{item_id}?k=10  200 {"item_id", "title", "model", "version", "related":
                                       [{"rank", "item_id", "title", "score"}, ...]}
    POST /related                 {"item_ids": ["1", "50"], "k": 10}  (k optional; or per query:
                                  {"queries": [{"item_id": "1", "k": 5}, ...]})
                                  200 {"model", "version", "results": [{"item_id", "related": [...]}
                                       or {"item_id", "error"}, ...]}: a bad query is that row's error
    POST /reload                  202: check the source now (a downstream DAG on the champion asset)

Errors are JSON ``{"error": reason}``: 404 for an item the catalogue does not hold, 400 for a bad k,
a malformed body or too many queries, 413 for a body over 1 MiB, 503 before the first load. Answers
are computed on the event loop (a table row is microseconds; a search past the table a millisecond or
two at 10^5 items), and nothing a client sends can raise past a handler.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pinsage.serve.recommend import DEFAULT_K, Answer, Catalogue, TooLarge, check_k

MAX_BODY = 1 << 20  # bytes of a POST body
MAX_QUERIES = 1_000  # queries of one POST
log = logging.getLogger("pinsage.serve")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Loaded:
    """One loaded version: what answers, and what /health says about it."""

    catalogue: Catalogue
    model: str  # a registered model's name, or the run directory
    version: str  # the registry's version, or "run"
    source: str  # where it came from (models:/NAME/VERSION, a path)
    alias: str | None = None
    loaded_at: str = field(default_factory=now_iso)


class Serving:
    """The current :class:`Loaded` (None until the first load) and what the last check said."""

    def __init__(self, on_reload: Callable[[], None] | None = None):
        self.current: Loaded | None = None
        self.last_check: str | None = None
        self.last_error: str | None = None
        self.on_reload = on_reload  # asks the loader to check its source now

    def swap(self, loaded: Loaded) -> None:
        self.current = loaded  # one reference assignment: a request sees the old or the new, whole
        self.last_error = None
        log.info("serving %s version %s (%d items) from %s", loaded.model, loaded.version,
                 len(loaded.catalogue), loaded.source)


class JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def _error(status: int, reason: str) -> JSON:
    return JSON({"error": reason}, status_code=status)


def _related(cat: Catalogue, a: Answer) -> list[dict]:
    return [{"rank": r, "item_id": i, "title": cat.titles.get(i), "score": s}
            for r, (i, s) in enumerate(zip(a.item_ids, a.scores), start=1)]


def create_app(serving: Serving) -> Starlette:
    async def health(request: Request) -> JSON:
        cur = serving.current
        body = {"status": "ok" if cur else "loading", "last_check": serving.last_check,
                "last_error": serving.last_error}
        if cur is not None:
            body.update(model=cur.model, alias=cur.alias, version=cur.version, loaded_at=cur.loaded_at,
                        source=cur.source, n_items=len(cur.catalogue),
                        answer_k=cur.catalogue.table.k if cur.catalogue.table is not None else 0)
        return JSON(body, status_code=200 if cur else 503)

    async def related_one(request: Request) -> JSON:
        cur = serving.current
        if cur is None:
            return _error(503, "no model loaded yet: see /health")
        item_id = request.path_params["item_id"]
        k, bad = check_k(request.query_params.get("k", DEFAULT_K))
        if bad:
            return _error(400, bad)
        a = cur.catalogue.answers([item_id], k)[0]
        if a.error is not None:
            return _error(404 if a.unknown else 400, a.error)
        return JSON({"item_id": a.query, "title": cur.catalogue.titles.get(a.query), "model": cur.model,
                     "version": cur.version, "related": _related(cur.catalogue, a)})

    async def related_batch(request: Request) -> JSON:
        cur = serving.current
        if cur is None:
            return _error(503, "no model loaded yet: see /health")
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY:,} bytes; send fewer queries per request")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY:,} bytes; send fewer queries per request")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            return _error(400, f"the body is not JSON: {err}")
        if not isinstance(body, dict) or ("item_ids" in body) == ("queries" in body):
            return _error(400, 'the body must be an object with "item_ids" (a list of ids, and an optional '
                               '"k") or "queries" (a list of {"item_id", "k"})')
        if "item_ids" in body:
            ids = body["item_ids"]
            if not isinstance(ids, list):
                return _error(400, f'"item_ids" must be a list of ids, got {type(ids).__name__}')
            k, bad = check_k(body.get("k", DEFAULT_K))
            if bad:
                return _error(400, bad)
            ks = [k] * len(ids)
        else:
            queries = body["queries"]
            if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
                return _error(400, '"queries" must be a list of objects {"item_id": ..., "k": ...}')
            ids, ks = [q.get("item_id") for q in queries], [q.get("k") for q in queries]
        if len(ids) > MAX_QUERIES:
            return _error(400, f"{len(ids)} queries in one request; at most {MAX_QUERIES}")
        ids = [i if isinstance(i, (str, int)) and not isinstance(i, bool) else None for i in ids]
        try:
            answers = cur.catalogue.answers(ids, ks)
        except TooLarge as err:
            return _error(400, str(err))
        results = [{"item_id": a.query, "error": a.error} if a.error is not None else
                   {"item_id": a.query, "related": _related(cur.catalogue, a)} for a in answers]
        return JSON({"model": cur.model, "version": cur.version, "results": results})

    async def reload(request: Request) -> JSON:
        if serving.on_reload is None:
            return _error(400, "this service serves a fixed source; nothing to reload")
        serving.on_reload()
        cur = serving.current
        return JSON({"model": cur.model if cur else None, "serving_version": cur.version if cur else None,
                     "checking": True}, status_code=202)

    async def internal_error(request: Request, exc: Exception) -> JSON:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/related/{item_id:path}", related_one, methods=["GET"]),
        Route("/related", related_batch, methods=["POST"]),
        Route("/reload", reload, methods=["POST"]),
    ], exception_handlers={Exception: internal_error})


def run_server(app: Starlette, host: str, port: int) -> None:
    """uvicorn, one process (the holder and its loader live in it), no access log (a line per request
    costs more than the answer)."""
    import uvicorn  # here: only a process that listens needs the server (tests drive the app in process)

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
