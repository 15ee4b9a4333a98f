"""Serving load: the recommender service and `mlflow models serve`, the same champion, pinned cores.

    python bench/bench_serving.py --json /tmp/serving.json          # both front ends, 10,000 items (~5 min idle)
    python bench/bench_serving.py --front-ends mlflow --rates 50,200 --seconds 10
    python bench/bench_serving.py --run runs/demo                     # the catalogue of a trained run

The champion is logged the way the register step logs it (``tasks.mlflow_model.log_recommender``:
network, embeddings, faiss index with its answer table, titles) in a throw-away sqlite MLflow store and
registered as ``bench`` with the alias ``champion``. Without ``--run`` the catalogue is synthetic
(``--items`` seeded unit vectors, an untrained network of the default size, the index written with its
answer table as the pipeline's index step writes it): answering never runs the network, so the request
path is the one a trained champion takes. ``--no-answer-table`` leaves the table out, so every answer
searches the index (the path of a request for more than the table's K items).

Two front ends, one worker each, each started alone and stopped before the next:

  service  ``python -m tasks.serve --model models:/bench@champion --poll-seconds 30``;
           ``GET /related/{item_id}?k=10``
  mlflow   ``mlflow models serve -m models:/bench@champion --env-manager local -w 1``;
           ``POST /invocations {"dataframe_records": [{"item_id": ...}], "params": {"k": 10}}``

Servers run under ``taskset -c 1`` (``--server-core``), load generators under ``taskset -c 0``
(``--client-core``); the affinity the kernel reports for every server process is printed. Items are
drawn uniformly from the catalogue. Other people's jobs on the machine would land in the figures, so
before each run the script waits (``--quiet-wait``) for both cores to idle, and every run reports the
share of the server's core that went to other processes.

What it measures:

1. The client's floor: the open-loop client (2.) against a server that answers at once with a canned
   body, at each rate: the latency the client and the loopback add by themselves.
2. In process, pinned to the server's core, no socket (``--calls`` calls each; mean / p50 / p99 ms):
   the faiss search alone, ``Catalogue.answers`` / ``related``; for the service its answer function
   (answer, records, orjson body) and its Starlette app; for MLflow the model's own ``predict``, the
   pyfunc ``predict`` (schema enforcement around it), ``scoring_server.invocations()`` (JSON in, predict,
   JSON out) and the whole scoring app (``mlflow.pyfunc.scoring_server.init(model)``, the FastAPI app
   ``mlflow models serve`` runs). Apps are called through ``httpx.ASGITransport``. Also one full
   ``gc.collect()`` with the model loaded: what a generation-2 pause costs such a process.
3. Open loop, per ``--rates`` for ``--seconds`` each: request i is due at start + i / rate whatever the
   answers' speed, and its latency counts from that instant (a slow server queues requests as real
   traffic would). The client is one asyncio process over raw keep-alive HTTP/1.1 connections: an idle
   connection is reused, a new one opened when none is idle (at most ``--max-connections``; a request
   waiting for one still counts from its instant); it reads the status line and Content-Length and
   checks that every answer holds k items. A request unanswered ``--timeout`` s after its instant is an
   error. Reported: p50 / p99 / max, errors, the rate the client issued (beside the target: it kept the
   schedule) and the answered rate, the server's CPU ms per answer, the slowest answers and when.
4. Closed loop, for saturation: ``wrk -t1 -c C -d --wrk-seconds --latency`` per ``--connections`` C,
   with a Lua script (written to a temp file) drawing a random item per request; req/s, p50 / p99 / max
   and non-2xx / socket errors. Without wrk, ``ab -k`` on one fixed item; with neither the script stops
   and says to ``apt-get install wrk``.

The bar: the service holds p99 < 20 ms at 200 req/s with no errors (open loop), and saturates above
1,000 req/s (wrk's best req/s without errors); ``mlflow models serve`` is reported beside it. Prints the
tables; ``--json PATH`` writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

FRONT_ENDS = ("service", "mlflow")
BAR_P99_MS, BAR_RATE, BAR_SATURATION = 20.0, 200.0, 1000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# The champion


def synthetic_catalogue(root: Path, n_items: int, dim: int = 128, seed: int = 0, answer_table: bool = True) -> dict:
    """items.parquet, embeddings/, index/ (with its answer table, as the pipeline's index step writes it,
    unless ``answer_table`` is False) and an (untrained) model dir of the default size."""
    import pandas as pd
    import pyarrow as pa
    import torch

    from pinsage.export.embeddings import write_embeddings
    from pinsage.export.index import build_index, save_index
    from pinsage.model.network import ModelConfig, PinSage, save_model
    from pinsage.util.io import write_table

    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(n_items)])
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_table(root / "items.parquet", pa.Table.from_pandas(
        pd.DataFrame({"item_id": ids, "title": [f"item {k}" for k in range(n_items)]}), preserve_index=False))
    write_embeddings(root / "embeddings", ids, emb)
    save_index(root / "index", build_index(emb), ids, emb if answer_table else None)
    torch.manual_seed(seed)
    save_model(PinSage(ModelConfig(input_dim=257, n_items=n_items, output_dim=dim)), root / "model")
    return {"model_dir": root / "model", "embeddings": root / "embeddings", "index": root / "index",
            "items": root / "items.parquet", "ids": ids}


def run_catalogue(run: Path) -> dict:
    """The artifacts of a finished run directory (``python -m pinsage run --out DIR``)."""
    import pyarrow.parquet as pq

    from pinsage.run.layout import RunDir

    rd = RunDir(run)
    ids = pq.read_table(rd.items, columns=["item_id"]).column(0).to_numpy(zero_copy_only=False).astype(str)
    return {"model_dir": rd.model_dir(), "embeddings": rd.embeddings, "index": rd.index, "items": rd.items, "ids": ids}


def register_champion(art: dict, store: Path) -> str:
    """Log and register the recommender as ``bench@champion`` in a local store; returns the tracking URI."""
    uri = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    from tasks import mlflow_model

    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("bench", artifact_location=str(store / "artifacts"))
    with mlflow.start_run(experiment_id=exp):
        info = mlflow_model.log_recommender(name="bench", model_dir=str(art["model_dir"]),
                                            embeddings_dir=str(art["embeddings"]), index_dir=str(art["index"]),
                                            items=str(art["items"]), example_item_id=str(art["ids"][0]))
    mv = mlflow.register_model(info.model_uri, "bench")
    mlflow.MlflowClient().set_registered_model_alias("bench", "champion", mv.version)
    return uri


# --------------------------------------------------------------------------------------------------
# Requests: the same random items for every front end


def sample_ids(ids: np.ndarray, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(ids[i]) for i in rng.integers(0, len(ids), n)]


def service_path(item_id: str, k: int) -> str:
    return f"/related/{urllib.parse.quote(item_id, safe='')}?k={k}"


def mlflow_body(item_id: str, k: int) -> str:
    return json.dumps({"dataframe_records": [{"item_id": item_id}], "params": {"k": k}})


def raw_request(front: str, host: str, port: int, item_id: str, k: int) -> bytes:
    if front == "service":
        return f"GET {service_path(item_id, k)} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    body = mlflow_body(item_id, k).encode()
    return (f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def answer_ok(front: str, body: bytes, k: int) -> bool:
    try:
        doc = json.loads(body)
        rows = doc["related"] if front == "service" else doc["predictions"]
        return len(rows) == k
    except (ValueError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------------------------------
# The open-loop client (runs in its own process, pinned to the client core)


def _parse_response(buf: bytearray) -> tuple[int, bytes, bool, int] | None:
    """(status, body, keep-alive, bytes used) of the first whole HTTP/1.1 response in ``buf``, or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    keep = b"\r\nconnection: close" not in head
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if m:
        stop = end + 4 + int(m.group(1))
        return (status, bytes(buf[end + 4:stop]), keep, stop) if len(buf) >= stop else None
    if b"\r\ntransfer-encoding: chunked" in head:
        pos, parts = end + 4, []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return None
            parts.append(bytes(buf[eol + 2:eol + 2 + size]))
            pos = eol + 2 + size + 2
            if size == 0:
                return status, b"".join(parts), keep, pos
    raise ValueError("a response without Content-Length or chunked encoding")


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the pool: one request at a time."""

    def __init__(self, pool: "_OpenLoopPool"):
        self.pool, self.buf, self.current, self.transport = pool, bytearray(), None, None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, i: int) -> None:
        self.current = i
        self.pool.sent_at[i] = time.perf_counter()
        self.transport.write(self.pool.requests[i])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            parsed = _parse_response(self.buf)
        except ValueError:
            return self.fail(4)
        if parsed is not None and self.current is not None:
            status, body, keep, used = parsed
            del self.buf[:used]
            i, self.current = self.current, None
            self.pool.answered(self, i, status, body, keep and not self.buf)

    def fail(self, outcome: int) -> None:
        if self.current is not None:
            i, self.current = self.current, None
            self.pool.finish(i, outcome)
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        self.pool.lost(self)


class _OpenLoopPool:
    """Sends request i at its instant on an idle connection (a new one when none is idle, at most
    ``max_connections``; beyond that it waits, in order, for the first to come free)."""

    def __init__(self, loop, host, port, front, requests, k, timeout, max_connections):
        n = len(requests)
        self.loop, self.host, self.port, self.front, self.requests = loop, host, port, front, requests
        self.k, self.timeout, self.max_connections = k, timeout, max_connections
        self.due_at, self.sent_at, self.done_at = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
        # -1 pending; 0 timeout; 1 ok; 2 bad status; 3 bad answer; 4 socket error
        self.outcome = np.full(n, -1, dtype=np.int8)
        self.statuses: dict[int, int] = {}
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.waiting: collections.deque[int] = collections.deque()
        self.opening = self.opened = self.finished = 0
        self.all_done = loop.create_future()

    def dispatch(self, i: int) -> None:
        if self.idle:
            conn = self.idle.pop()
            self.busy.add(conn)
            conn.send(i)
            return
        self.waiting.append(i)
        self._refill()

    def _refill(self) -> None:
        """Open connections for the waiting requests, within the cap."""
        while len(self.waiting) > self.opening and len(self.busy) + self.opening < self.max_connections:
            self.opening += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            if self.waiting:
                self.finish(self.waiting.popleft(), 4)
            return
        self.opening -= 1
        self.opened += 1
        self._next(conn)

    def _next(self, conn: _Connection) -> None:
        while self.waiting and self.outcome[self.waiting[0]] != -1:
            self.waiting.popleft()
        if self.waiting:
            self.busy.add(conn)
            conn.send(self.waiting.popleft())
        else:
            self.busy.discard(conn)
            self.idle.append(conn)

    def answered(self, conn: _Connection, i: int, status: int, body: bytes, keep: bool) -> None:
        self.done_at[i] = time.perf_counter()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.finish(i, 1 if status == 200 and answer_ok(self.front, body, self.k) else (2 if status != 200 else 3))
        if keep:
            self._next(conn)
        else:
            self.busy.discard(conn)
            conn.transport.close()
            self._refill()

    def lost(self, conn: _Connection) -> None:
        if conn.current is not None:
            conn.fail(4)
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self._refill()

    def finish(self, i: int, outcome: int) -> None:
        if self.outcome[i] == -1:
            self.outcome[i] = outcome
            self.finished += 1
            if self.finished == len(self.requests) and not self.all_done.done():
                self.all_done.set_result(None)

    def expire(self) -> None:
        """Requests unanswered ``timeout`` s after their instant: errors; their connections are dropped."""
        limit = time.perf_counter() - self.timeout
        while self.waiting and (self.outcome[self.waiting[0]] != -1 or self.due_at[self.waiting[0]] < limit):
            j = self.waiting.popleft()
            self.finish(j, 0)
        for conn in [c for c in self.busy if c.current is not None and self.due_at[c.current] < limit]:
            self.busy.discard(conn)
            conn.fail(0)
        self._refill()


async def open_loop(host: str, port: int, front: str, requests: list[bytes], rate: float, k: int,
                    timeout: float, max_connections: int) -> dict:
    loop = asyncio.get_running_loop()
    now = time.perf_counter  # instants in perf_counter time (uvloop's loop clock has 1 ms resolution)
    n = len(requests)
    pool = _OpenLoopPool(loop, host, port, front, requests, k, timeout, max_connections)
    start = now() + 0.2
    pool.due_at[:] = due_at = start + np.arange(n) / rate
    issued_at = np.zeros(n)

    async def sweeper():
        while not pool.all_done.done():
            pool.expire()
            await asyncio.sleep(0.05)

    sweep = loop.create_task(sweeper())
    for i in range(n):  # never early: a request waits for its instant (timers may wake late, never early)
        while (delay := due_at[i] - now()) > 0:
            await asyncio.sleep(delay)
        issued_at[i] = now()
        pool.dispatch(i)
    await pool.all_done
    sweep.cancel()
    for conn in list(pool.idle) + list(pool.busy):
        conn.transport.close()
    outcome, sent_at, done_at = pool.outcome, pool.sent_at, pool.done_at
    lat = (done_at - due_at) * 1e3
    ok = outcome == 1
    okl = lat[ok]
    lag = (issued_at - due_at) * 1e3
    queued = (sent_at - due_at) * 1e3
    # per-second latency series (by scheduled instant) and the slowest answers, for spikes
    sec = (due_at - start).astype(int)
    series = []
    for s_ in range(int(sec.max()) + 1):
        m = ok & (sec == s_)
        series.append({"s": s_, "p50": float(np.percentile(lat[m], 50)) if m.any() else None,
                       "p99": float(np.percentile(lat[m], 99)) if m.any() else None,
                       "max": float(lat[m].max()) if m.any() else None, "errors": int((~ok & (sec == s_)).sum())})
    slow = np.argsort(np.where(ok, lat, -1))[::-1][:10]
    pct = (lambda q: float(np.percentile(okl, q))) if ok.any() else (lambda q: None)
    return {
        "target_rps": rate, "requests": n, "ok": int(ok.sum()),
        "errors": int((~ok).sum()), "timeouts": int((outcome == 0).sum()), "bad_status": int((outcome == 2).sum()),
        "bad_answers": int((outcome == 3).sum()), "socket_errors": int((outcome == 4).sum()),
        "statuses": {str(s_): c for s_, c in sorted(pool.statuses.items())},
        "issued_rps": float((n - 1) / (issued_at[-1] - issued_at[0])) if n > 1 else float("nan"),
        "answered_rps": float(ok.sum() / (np.nanmax(done_at) - start)) if ok.any() else 0.0,
        "issue_lag_p50_ms": float(np.percentile(lag, 50)), "issue_lag_p99_ms": float(np.percentile(lag, 99)),
        "issue_lag_max_ms": float(lag.max()),
        "queued_for_connection_p99_ms": float(np.nanpercentile(queued, 99)) if np.isfinite(queued).any() else None,
        "p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
        "max": float(okl.max()) if ok.any() else None,
        "over_20ms": int((okl > 20).sum()),
        "connections_opened": pool.opened,
        "slowest": [{"t_s": round(float(due_at[i] - start), 3), "ms": round(float(lat[i]), 2)} for i in slow if ok[i]],
        "per_second": series,
        "wall_start": time.time() - (now() - start),
    }


def client_main(spec_path: str) -> None:
    """``--_client SPEC``: one open-loop run; SPEC (JSON) names the requests; writes the result beside it."""
    spec = json.loads(Path(spec_path).read_text())
    requests = [r.encode("latin-1") for r in spec["requests"]]
    loop_name, runner = "asyncio", asyncio.run
    if spec.get("loop", "uvloop") == "uvloop":
        try:
            import uvloop
            loop_name, runner = "uvloop", uvloop.run
        except ImportError:
            pass
    gc.collect()
    gc.freeze()  # the client's own pauses stay out of the figures
    gc.disable()
    cpu0 = time.process_time()
    res = runner(open_loop(spec["host"], spec["port"], spec["front"], requests, spec["rate"], spec["k"],
                           spec["timeout"], spec["max_connections"]))
    res["client_cpu_s"] = time.process_time() - cpu0
    res["client_loop"] = loop_name
    res["client_affinity"] = sorted(os.sched_getaffinity(0))
    Path(spec["out"]).write_text(json.dumps(res))


# --------------------------------------------------------------------------------------------------
# In process, no socket (runs in its own process, pinned to the server core)


def _timed(fn, args_list: list, warm: int = 20) -> dict:
    for a in args_list[:warm]:
        fn(a)
    t = np.empty(len(args_list))
    for j, a in enumerate(args_list):
        t0 = time.perf_counter()
        fn(a)
        t[j] = time.perf_counter() - t0
    t *= 1e3
    return {"mean": float(t.mean()), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)),
            "calls": len(t)}


def _asgi_timed(app, method: str, paths: list[str], bodies: list[str | None], check) -> dict:
    """Mean ms of one request through an ASGI app via httpx's ASGITransport (no socket, no HTTP parser)."""
    import httpx

    async def go():
        t = np.empty(len(paths))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as c:
            async def call(j):
                if method == "GET":
                    return await c.get(paths[j])
                return await c.post(paths[j], content=bodies[j], headers={"content-type": "application/json"})
            for j in range(min(20, len(paths))):
                r = await call(j)
                if not check(r):
                    raise RuntimeError(f"in-process {method} {paths[j]} answered {r.status_code}: {r.text[:300]}")
            for j in range(len(paths)):
                t0 = time.perf_counter()
                await call(j)
                t[j] = time.perf_counter() - t0
        t *= 1e3
        return {"mean": float(t.mean()), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)),
                "calls": len(t)}

    return asyncio.run(go())


def _catalogue_figures(cat, ids: list[str], k: int) -> dict:
    """The library's answer path (``pinsage.serve.recommend.Catalogue``), whatever version is in the tree."""
    ro = cat.row_of
    rows = [ro[q] for q in ids] if isinstance(ro, dict) else list(ro.get_indexer(ids))
    vecs = np.asarray(cat.embeddings)[rows]
    out = {"faiss search alone (k + 1, one query)": _timed(lambda v: cat.index.search(v[None, :], k + 1), list(vecs))}
    table = getattr(cat, "table", None)
    path = "a row of the answer table" if table is not None and table.k >= k else "an index search: no answer table"
    if hasattr(cat, "answers"):
        out[f"Catalogue.answers ({path})"] = _timed(lambda q: cat.answers([q], k), ids)
    out["Catalogue.related (records with titles)"] = _timed(lambda q: cat.related([q], k), ids)
    return out


def inprocess_mlflow(ids: list[str], k: int) -> dict:
    import mlflow
    import pandas as pd
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model("models:/bench@champion")
    inner = model.unwrap_python_model()
    frames = [pd.DataFrame({"item_id": [q]}) for q in ids]
    bodies = [mlflow_body(q, k) for q in ids]
    schema = model.metadata.get_input_schema()
    out = _catalogue_figures(inner.catalogue, ids, k)
    out["model's own predict (PinSageRecommender.predict: frame in, frame out)"] = _timed(
        lambda f: inner.predict(None, f, {"k": k}), frames)
    out["pyfunc predict (MLflow's schema enforcement + the model's predict)"] = _timed(
        lambda f: model.predict(f, params={"k": k}), frames)
    out["MLflow invocations() (JSON parse, pyfunc predict, JSON out)"] = _timed(
        lambda b: scoring_server.invocations(b, "application/json", model, schema), bodies)
    app = scoring_server.init(model)
    out["MLflow scoring app, in process (FastAPI, middleware, thread hop; httpx ASGITransport)"] = _asgi_timed(
        app, "POST", ["/invocations"] * len(bodies), bodies,
        lambda r: r.status_code == 200 and len(r.json()["predictions"]) == k)
    return out


def inprocess_service(ids: list[str], k: int) -> dict:
    """The service's answer path and its app (``pinsage.serve.http.create_app``), loaded as ``tasks.serve``
    loads a version."""
    import mlflow

    from pinsage.serve import http
    from tasks import serve

    client = mlflow.MlflowClient()
    version = str(client.get_model_version_by_alias("bench", "champion").version)
    cache = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        cat = serve.load_version(client, "bench", version, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    serving = http.Serving()
    serving.swap(http.Loaded(cat, model="bench", version=version, source=f"models:/bench/{version}", alias="champion"))
    out = _catalogue_figures(cat, ids, k)

    def answer_and_body(q: str) -> bytes:  # what related_one does between Starlette's parsing and sending
        a = cat.answers([q], k)[0]
        return http.JSON({"item_id": a.query, "title": cat.titles.get(a.query), "model": "bench", "version": version,
                          "related": http._related(cat, a)}).body

    out["service answer function (Catalogue.answers + records + orjson body)"] = _timed(answer_and_body, ids)
    app = http.create_app(serving)
    out["service app, in process (Starlette routing + handler; httpx ASGITransport)"] = _asgi_timed(
        app, "GET", [service_path(q, k) for q in ids], [None] * len(ids),
        lambda r: r.status_code == 200 and len(r.json()["related"]) == k)
    return out


def _gc_figures() -> dict:
    """A full collection in this process (model and app loaded): what one gen-2 pause of a server costs."""
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        gc.collect()
        t.append((time.perf_counter() - t0) * 1e3)
    return {"full_gc_ms": float(np.median(t)), "tracked_objects": len(gc.get_objects()),
            "gc_thresholds": list(gc.get_threshold())}


def inprocess_main(spec_path: str) -> None:
    """``--_inprocess SPEC``: one front end's in-process figures, pinned by the caller to the server core."""
    spec = json.loads(Path(spec_path).read_text())
    front = spec["front"]
    res: dict = {"affinity": sorted(os.sched_getaffinity(0))}
    try:
        res["calls"] = (inprocess_mlflow if front == "mlflow" else inprocess_service)(spec["ids"], spec["k"])
        res["gc"] = _gc_figures()
    except Exception as e:  # noqa: BLE001  (reported; the HTTP figures still run)
        import traceback
        res["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
    Path(spec["out"]).write_text(json.dumps(res))


def echo_main(port: int) -> None:
    """``--_echo PORT``: a server that answers every request at once with a canned k = 10 answer, so the
    open-loop client's own latency floor can be measured (``client_floor`` in the figures)."""
    body = json.dumps({"related": [{"rank": r} for r in range(1, 11)]}).encode()
    resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                self.buf = self.buf.partition(b"\r\n\r\n")[2]
                self.transport.write(resp)

    async def serve():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


# --------------------------------------------------------------------------------------------------
# Servers


def affinity_of_tree(pid: int) -> list[dict]:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            out.append({"pid": p.pid, "cmd": " ".join(p.cmdline()[:4])[:80], "cpus": p.cpu_affinity(),
                        "threads": p.num_threads()})
        except psutil.Error:
            pass
    return out


def tree_cpu_seconds(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


def core_busy() -> list[tuple[float, float]]:
    """(busy, total) seconds per core since boot, from /proc/stat."""
    import psutil

    return [(t.user + t.nice + t.system + t.irq + t.softirq + t.steal, sum(t)) for t in psutil.cpu_times(percpu=True)]


def busy_share(before, after) -> list[float]:
    return [round(100 * (a[0] - b[0]) / max(1e-9, a[1] - b[1]), 1) for b, a in zip(before, after)]


def wait_machine_quiet(limit: float, threshold: float = 15.0) -> dict:
    """Before a run: until every core was under ``threshold`` % busy for one second (other people's
    jobs share this machine), at most ``limit`` seconds; returns the wait and the last sample."""
    t0 = time.time()
    while True:
        b0 = core_busy()
        time.sleep(1.0)
        busy = busy_share(b0, core_busy())
        if max(busy) < threshold or time.time() - t0 >= limit:
            return {"waited_s": round(time.time() - t0, 1), "busy_before_pct": busy, "quiet": max(busy) < threshold}


def cpu_reference(core: int) -> float:
    """ms of a fixed pure-Python workload on ``core`` (median of 5): the machine's speed at that moment,
    so runs measured while the host was slower (a noisy neighbour outside this VM) can be told apart."""
    keep = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            acc = 0
            for j in range(300_000):
                acc += j * j % 7
            d = {str(j): j for j in range(20_000)}
            json.dumps(d)
            t.append((time.perf_counter() - t0) * 1e3)
        return round(float(np.median(t)), 2)
    finally:
        os.sched_setaffinity(0, keep)


class CpuAccount:
    """CPU use during one load run: the server's (its process tree), the load generator's (this process's
    reaped children) and each core's busy share, so what else ran on the two cores shows up as
    ``other_pct``: the busy share of the core left after the server (its core) or the client (its core)."""

    def __init__(self, server_pid: int | None, server_core: int, client_core: int):
        self.pid, self.server_core, self.client_core = server_pid, server_core, client_core

    def __enter__(self):
        import resource

        self.t0, self.busy0 = time.perf_counter(), core_busy()
        self.cpu0 = tree_cpu_seconds(self.pid) if self.pid else 0.0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.child0 = ru.ru_utime + ru.ru_stime
        return self

    def __exit__(self, *exc):
        import resource

        wall = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.server_s = tree_cpu_seconds(self.pid) - self.cpu0 if self.pid else 0.0
        client_s = ru.ru_utime + ru.ru_stime - self.child0
        busy = busy_share(self.busy0, core_busy())
        server_pct, client_pct = 100 * self.server_s / wall, 100 * client_s / wall
        self.figures = {
            "wall_s": round(wall, 2), "core_busy_pct": busy, "server_cpu_pct": round(server_pct, 1),
            "client_cpu_pct": round(client_pct, 1),
            "other_pct_server_core": round(max(0.0, busy[self.server_core] - server_pct), 1),
            "other_pct_client_core": round(max(0.0, busy[self.client_core] - client_pct), 1)}
        return False


class Server:
    def __init__(self, front: str, uri: str, tmp: Path, core: int, k: int):
        self.front, self.k = front, k
        self.port = _free_port()
        self.log_path = tmp / f"{front}.log"
        if front == "service":
            cmd = [sys.executable, "-m", "tasks.serve", "--model", "models:/bench@champion", "--host", "127.0.0.1",
                   "--port", str(self.port), "--poll-seconds", "30"]
            self.health = "/health"
        else:
            cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bench@champion",
                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(self.port), "-w", "1"]
            self.health = "/ping"
        self.cmd = ["taskset", "-c", str(core)] + cmd
        self.log = open(self.log_path, "wb")
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
        self.t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)
        self.version, self.health_body = None, None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head[9:12]), body

    def wait_ready(self, limit: float = 300.0) -> float:
        while True:
            try:
                status, body = self.get(self.health)
                if status == 200:
                    if self.front == "service":
                        self.health_body = json.loads(body)
                        self.version = self.health_body.get("version")
                    return time.time() - self.t0
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None or time.time() - self.t0 > limit:
                raise SystemExit(f"{self.front} did not start ({' '.join(self.cmd)}):\n{self.log_tail()}")
            time.sleep(0.25)

    def wait_quiet(self, limit: float = 60.0) -> float:
        """Until a health probe answers within 50 ms (a saturated server drains its queue first)."""
        t0 = time.time()
        while time.time() - t0 < limit:
            self.alive()
            try:
                t = time.perf_counter()
                status, _ = self.get(self.health, timeout=5)
                if status == 200 and time.perf_counter() - t < 0.05:
                    return time.time() - t0
            except OSError:
                pass
            time.sleep(0.5)
        return time.time() - t0

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.front} exited with {self.proc.returncode} during the run:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def log_size(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def log_findings(self, since: int = 0) -> dict:
        """Tracebacks and 5xx access-log lines the server wrote after byte ``since``, with the first
        traceback's exception line."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        starts = [j for j, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
        first = None
        if starts:
            tail = lines[starts[0] + 1:]
            first = next((ln for ln in tail if ln and not ln.startswith((" ", "\t", "Traceback"))), None)
        return {"log_lines": len(lines), "tracebacks": len(starts),
                "http_5xx": sum(1 for ln in lines if re.search(r'" 5\d\d\b', ln)),
                "first_exception": first, "first_error_line": next((ln for ln in lines if "ERROR" in ln), None)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------------
# Load generators


def run_open_loop(server: Server, ids: np.ndarray, rate: float, seconds: float, core: int, tmp: Path, args,
                  seed: int) -> dict:
    n = max(1, int(round(rate * seconds)))
    reqs = [raw_request(server.front, "127.0.0.1", server.port, q, args.k).decode("latin-1")
            for q in sample_ids(ids, n, seed)]
    spec = tmp / f"client_{server.front}_{rate:g}.json"
    out = tmp / f"client_{server.front}_{rate:g}.out.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": server.port, "front": server.front, "requests": reqs,
                                "rate": rate, "k": args.k, "timeout": args.timeout,
                                "max_connections": args.max_connections, "loop": args.client_loop,
                                "out": str(out)}))
    quiet = wait_machine_quiet(args.quiet_wait)
    mark = server.log_size()
    with CpuAccount(server.proc.pid, args.server_core, core) as acc:
        subprocess.run(["taskset", "-c", str(core), sys.executable, str(Path(__file__).resolve()), "--_client",
                        str(spec)], check=True, cwd=REPO)
    res = json.loads(out.read_text())
    res["server_cpu_ms_per_answer"] = 1e3 * acc.server_s / max(1, res["ok"])
    res.update(acc.figures, before=quiet)
    res["since_server_start_s"] = res["wall_start"] - server.t0
    for slow in res["slowest"]:  # when in the server's life (its loader polls the registry every 30 s)
        slow["since_server_start_s"] = round(res["since_server_start_s"] + slow["t_s"], 2)
    server.alive()
    res["quiet_after_s"] = server.wait_quiet()
    res["server_log"] = server.log_findings(mark)
    return res


WRK_LUA = """-- written by bench/bench_serving.py: a random item per request
local items = {{
{items}
}}
local n = #items
math.randomseed({seed})
{setup}
request = function()
  {request}
end
"""


def _lua_str(s: str) -> str:
    assert s.isascii(), s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_wrk_lua(front: str, ids: np.ndarray, k: int, path: Path, seed: int = 7) -> None:
    sample = sample_ids(ids, min(len(ids), 10_000), seed) if len(ids) > 10_000 else [str(i) for i in ids]
    if front == "service":
        items = ",\n".join(_lua_str(service_path(q, k)) for q in sample)
        setup = ""
        request = 'return wrk.format("GET", items[math.random(n)])'
    else:
        items = ",\n".join(_lua_str(mlflow_body(q, k)) for q in sample)
        setup = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"'
        request = 'return wrk.format("POST", "/invocations", nil, items[math.random(n)])'
    path.write_text(WRK_LUA.format(items=items, seed=seed, setup=setup, request=request))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
                 "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = _ms(m.group(1)) if m else None
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    res["mean"], res["max"] = (_ms(m.group(1)), _ms(m.group(3))) if m else (None, None)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    return res


def parse_ab(out: str) -> dict:
    res: dict = {"rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)),
                 "requests": int(re.search(r"Complete requests:\s+(\d+)", out).group(1))}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\d+)", out, re.M)
        res[f"p{pct}"] = float(m.group(1)) if m else None
    m = re.search(r"Non-2xx responses:\s+(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Failed requests:\s+(\d+)", out)
    res["socket_errors"] = {"failed": int(m.group(1))} if m else {}
    res["mean"] = res["max"] = None
    return res


def run_closed_loop(server: Server, tool: str, ids: np.ndarray, conns: int, seconds: int, core: int, tmp: Path,
                    args) -> dict:
    base = f"http://127.0.0.1:{server.port}"
    if tool == "wrk":
        lua = tmp / f"wrk_{server.front}.lua"
        if not lua.exists():
            write_wrk_lua(server.front, ids, args.k, lua)
        url = base + ("/related/x" if server.front == "service" else "/invocations")
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", f"--timeout={int(args.timeout)}s",
               "-s", str(lua), url]
    else:  # ab: one fixed item (ab cannot vary the request)
        q = str(ids[0])
        cmd = ["ab", "-k", "-q", "-c", str(conns), "-t", str(seconds), "-n", "10000000", "-s", str(int(args.timeout))]
        if server.front == "service":
            cmd.append(base + service_path(q, args.k))
        else:
            body = tmp / "ab_body.json"
            body.write_text(mlflow_body(q, args.k))
            cmd += ["-p", str(body), "-T", "application/json", base + "/invocations"]
    quiet = wait_machine_quiet(args.quiet_wait)
    mark = server.log_size()
    with CpuAccount(server.proc.pid, args.server_core, core) as acc:
        p = subprocess.run(["taskset", "-c", str(core)] + cmd, capture_output=True, text=True, cwd=tmp)
    if p.returncode != 0:
        raise SystemExit(f"{tool} failed ({' '.join(cmd)}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    res = parse_wrk(p.stdout) if tool == "wrk" else parse_ab(p.stdout)
    res.update(connections=conns, seconds=seconds, tool=tool, command=" ".join(["taskset", "-c", str(core)] + cmd),
               server_cpu_ms_per_answer=1e3 * acc.server_s / max(1, res["requests"]), **acc.figures,
               before=quiet)
    server.alive()
    res["quiet_after_s"] = server.wait_quiet()
    res["server_log"] = server.log_findings(mark)
    return res


OTHER_LOAD_LIMIT = {"server": 10.0, "client": 25.0}  # % of a core other processes may take during a kept run


def disturbed(res: dict) -> bool:
    return (res["other_pct_server_core"] > OTHER_LOAD_LIMIT["server"]
            or res["other_pct_client_core"] > OTHER_LOAD_LIMIT["client"])


def with_retries(run, retries: int, what: str) -> dict:
    """``run()``, again (up to ``retries`` more times) while other processes took a share of the cores
    over OTHER_LOAD_LIMIT; the discarded attempts are kept in ``discarded``."""
    discarded = []
    while True:
        res = run()
        if not disturbed(res) or len(discarded) >= retries:
            res["discarded"] = discarded
            res["disturbed"] = disturbed(res)
            return res
        print(f"  {what}: other processes took {res['other_pct_server_core']}% of the server core and "
              f"{res['other_pct_client_core']}% of the client core; measuring again", flush=True)
        discarded.append({k: res.get(k) for k in ("p50", "p99", "max", "rps", "answered_rps", "errors",
                                                  "other_pct_server_core", "other_pct_client_core")})


# --------------------------------------------------------------------------------------------------
# Report


def _f(v, nd=1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:,.{nd}f}"


def table(head: list[str], rows: list[list[str]], align: str) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def best_closed_loop(r: dict) -> dict | None:
    """The closed-loop run with the most req/s among those without a non-2xx answer or a socket error."""
    clean = [c for c in r["closed_loop"] if c["non_2xx"] == 0 and not any(c["socket_errors"].values())]
    return max(clean, key=lambda c: c["rps"], default=None)


def bar_verdict(results: dict) -> dict:
    s = results["front_ends"].get("service")
    if not s:
        return {"holds": None, "why": ["the service was not measured"]}
    at = next((o for o in s["open_loop"] if o["target_rps"] == BAR_RATE), None)
    best = best_closed_loop(s)
    sat = best["rps"] if best else 0.0
    p99_ok = bool(at is not None and at["p99"] is not None and at["p99"] < BAR_P99_MS and at["errors"] == 0)
    sat_ok = sat > BAR_SATURATION
    why = [f"p99 at {BAR_RATE:g} req/s (open loop): " + (f"{_f(at['p99'], 2)} ms, {at['errors']} errors" if at else
                                                         "not measured (add 200 to --rates)")
           + f"; needs < {BAR_P99_MS:g} ms and 0 errors: {'yes' if p99_ok else 'no'}",
           f"saturation ({results.get('closed_loop_tool', 'wrk')}'s best req/s without errors): {_f(sat, 0)}"
           + (f" at {best['connections']} connections" if best else "")
           + f"; needs > {BAR_SATURATION:,.0f}: {'yes' if sat_ok else 'no'}"]
    m = results["front_ends"].get("mlflow")
    if m:
        at_m = next((o for o in m["open_loop"] if o["target_rps"] == BAR_RATE), None)
        best_m = best_closed_loop(m)
        why.append("beside it, mlflow models serve: p99 at 200 req/s "
                   + (f"{_f(at_m['p99'], 2)} ms, {at_m['errors']} errors" if at_m else "not measured")
                   + f"; saturation {_f(best_m['rps'] if best_m else None, 0)} req/s")
    holds = None if at is None or best is None else bool(p99_ok and sat_ok)  # a part not measured: no verdict
    return {"holds": holds, "p99_holds": p99_ok, "saturation_holds": sat_ok,
            "saturation_rps": sat, "why": why}


def _where_time_goes(results: dict) -> list[list[str]]:
    rows = []
    for front, r in results["front_ends"].items():
        calls = r.get("in_process", {}).get("calls", {})
        answer = next((v["mean"] for n, v in calls.items() if n.startswith(("pyfunc predict", "service answer"))), None)
        app = next((v["mean"] for n, v in calls.items() if "app, in process" in n), None)
        low = r["open_loop"][0] if r["open_loop"] else None
        at = next((o for o in r["open_loop"] if o["target_rps"] == BAR_RATE), None)
        best = best_closed_loop(r)
        rows.append([front, _f(answer, 3), _f(app, 3), _f(low["p50"], 2) if low else "-",
                     _f(at["server_cpu_ms_per_answer"], 2) if at else "-", _f(1e3 / best["rps"], 2) if best else "-"])
    return rows


def report(results: dict) -> str:
    out = []
    m = results["machine"]
    out.append(f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}, "
               f"mlflow {m['mlflow']}; {results['items']:,} items, k = {results['k']}; commit {results['git_commit']}")
    health = (results["front_ends"].get("service") or {}).get("health") or {}
    out.append("Answer table: " + {True: "written with the index, as the pipeline's index step does",
                                   False: "none (--no-answer-table): every answer searches the index",
                                   None: "as the run directory has it"}[results.get("answer_table")]
               + (f"; the service's /health says answer_k = {health['answer_k']}" if "answer_k" in health else ""))
    out.append(f"Pinning: servers on core {results['server_core']} (taskset -c {results['server_core']}), load "
               f"generators (open-loop client, {results.get('closed_loop_tool')}) on core {results['client_core']} "
               f"(taskset -c {results['client_core']}); the kernel reports:")
    for front, r in results["front_ends"].items():
        for p in r["pinning"]:
            out.append(f"  {front}: pid {p['pid']} cpus {p['cpus']} ({p['threads']} threads)  {p['cmd']}")
    for name in ("client", "in_process"):
        if results.get(f"{name}_affinity"):
            out.append(f"  {name}: cpus {results[f'{name}_affinity']}")
    out.append(f"CPU reference (a fixed pure-Python workload on core {results['server_core']}, ms; lower is faster): "
               + "; ".join(f"{front} before / after its runs {r['cpu_reference_ms'][0]} / "
                           f"{r['cpu_reference_ms'][-1]}" for front, r in results["front_ends"].items()))

    fl = results.get("client_floor") or []
    if fl:
        out.append(f"\nThe open-loop client's own floor: the same client against a server that answers at once "
                   f"(canned body, core {results['server_core']}), "
                   f"{fl[0]['requests'] / fl[0]['target_rps']:g} s per rate "
                   f"({fl[0]['client_loop']} loop):\n")
        out.append(table(["target req/s", "issued req/s", "answered req/s", "errors", "p50 ms", "p99 ms", "max ms",
                          "client lateness p99 ms"],
                         [[_f(o["target_rps"], 0), _f(o["issued_rps"], 0), _f(o["answered_rps"], 0), str(o["errors"]),
                           _f(o["p50"], 2), _f(o["p99"], 2), _f(o["max"], 1), _f(o["issue_lag_p99_ms"], 2)]
                          for o in fl], "rrrrrrrr"))

    out.append(f"\nIn process, pinned to core {results['server_core']}, no socket ({results['calls']} calls each):\n")
    rows = []
    for front, r in results["front_ends"].items():
        ip = r.get("in_process", {})
        for name, t in ip.get("calls", {}).items():
            rows.append([front, name, _f(t["mean"], 3), _f(t["p50"], 3), _f(t["p99"], 3)])
        if ip.get("gc"):
            rows.append([front, f"one full GC pass (gc.collect(); {ip['gc']['tracked_objects']:,} objects tracked)",
                         _f(ip["gc"]["full_gc_ms"], 1), "", ""])
        if ip.get("error"):
            rows.append([front, "(failed) " + ip["error"].splitlines()[0], "-", "-", "-"])
    out.append(table(["front end", "call", "mean ms", "p50 ms", "p99 ms"], rows, "llrrr"))

    out.append(f"\nOpen loop: requests sent at fixed instants, latency from the scheduled instant, "
               f"{results['seconds']:g} s per rate, uniform random items (client: "
               f"{results.get('client_loop', 'asyncio')}, raw keep-alive "
               f"HTTP/1.1, one process on core {results['client_core']}):\n")
    rows = []
    for front, r in results["front_ends"].items():
        for o in r["open_loop"]:
            rows.append([front, _f(o["target_rps"], 0), _f(o["issued_rps"], 0), _f(o["answered_rps"], 0),
                         str(o["requests"]), str(o["errors"]), _f(o["p50"], 2), _f(o["p99"], 2), _f(o["max"], 1),
                         _f(o["server_cpu_ms_per_answer"], 2), str(o["connections_opened"]),
                         _f(o["other_pct_server_core"], 0)])
    out.append(table(["front end", "target req/s", "issued req/s", "answered req/s", "requests", "errors", "p50 ms",
                      "p99 ms", "max ms", "server CPU ms/answer", "connections", "other load on server core %"], rows,
                     "lrrrrrrrrrrr"))

    tool = results.get("closed_loop_tool", "wrk")
    out.append(f"\nClosed loop ({tool}, one thread, {results['wrk_seconds']} s per connection count, on core "
               f"{results['client_core']}):\n")
    rows = []
    for front, r in results["front_ends"].items():
        for c in r["closed_loop"]:
            rows.append([front, str(c["connections"]), _f(c["rps"], 0), _f(c["p50"], 2), _f(c["p99"], 2),
                         _f(c["max"], 1), str(c["non_2xx"]), str(sum(c["socket_errors"].values())),
                         _f(c["server_cpu_ms_per_answer"], 2), _f(c["other_pct_server_core"], 0)])
    out.append(table(["front end", "connections", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "socket errors",
                      "server CPU ms/answer", "other load on server core %"], rows, "lrrrrrrrrr"))

    out.append("\nWhere a request's time goes (ms per request):\n")
    out.append(table(["front end", "answer function in process", "whole app in process (no socket)",
                      f"HTTP p50 at {_f(results['rates'][0], 0)} req/s", f"server CPU per answer at {BAR_RATE:g} req/s",
                      "1 / saturated req/s"], _where_time_goes(results), "lrrrrr"))

    out.append("")
    for front, r in results["front_ends"].items():
        out.append(f"{front}: slowest open-loop answers (s after the run's first instant: ms): " + "; ".join(
            f"{o['target_rps']:g}/s " + ", ".join(f"{s['t_s']:.2f}s: {s['ms']:.1f}" for s in o["slowest"][:3])
            for o in r["open_loop"]))
        lf = r["log"]
        runs = [(f"open loop {o['target_rps']:g}/s", o) for o in r["open_loop"]] + \
               [(f"{c['tool']} -c{c['connections']}", c) for c in r["closed_loop"]]
        bad = [f"{name}: {x['server_log']['tracebacks']}" for name, x in runs if x["server_log"].get("tracebacks")]
        out.append(f"{front}: server log {lf['log_lines']:,} lines, {lf['tracebacks']:,} tracebacks, "
                   f"{lf['http_5xx']:,} 5xx access-log lines"
                   + (f"; tracebacks by run: {', '.join(bad)}; first exception: {lf['first_exception']}"
                      if bad else ""))
    disturbed_runs = [f"{front} {name}" for front, r in results["front_ends"].items()
                      for name, x in [("in process", r.get("in_process", {}))]
                      + [(f"open loop {o['target_rps']:g}/s", o) for o in r["open_loop"]]
                      + [(f"closed loop -c{c['connections']}", c) for c in r["closed_loop"]] if x.get("disturbed")]
    disturbed_runs += [f"client floor {o['target_rps']:g}/s" for o in results.get("client_floor", [])
                       if o.get("disturbed")]
    if disturbed_runs:
        out.append("WARNING: other processes took a share of the cores during " + ", ".join(disturbed_runs)
                   + f" even after {results.get('retries')} retries: those figures are not clean")

    v = results["bar"]
    out.append("\nBar: the recommender service holds p99 < 20 ms at 200 req/s with no errors and saturates above "
               f"1,000 req/s: {'HOLDS' if v['holds'] else ('NOT MEASURED' if v['holds'] is None else 'DOES NOT HOLD')}")
    out += [f"  - {w}" for w in v.get("why", [])]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------


def closed_loop_tool() -> str:
    if shutil.which("wrk"):
        return "wrk"
    if shutil.which("ab"):
        print("wrk not found, falling back to ab (one fixed item per run; install wrk for random items: "
              "apt-get install wrk)", flush=True)
        return "ab"
    raise SystemExit("neither wrk nor ab is installed; the saturation figures need one: apt-get install wrk "
                     "(or apt-get install apache2-utils for ab)")


def _run_self(core: int, *argv: str, env: dict | None = None) -> None:
    subprocess.run(["taskset", "-c", str(core), sys.executable, str(Path(__file__).resolve()), *argv], check=True,
                   cwd=REPO, env=env)


def client_floor(ids: np.ndarray, rates: list[float], tmp: Path, args) -> list[dict]:
    """The open-loop client against ``--_echo`` (answers at once): the latency the client itself adds."""
    port = _free_port()
    echo = subprocess.Popen(["taskset", "-c", str(args.server_core), sys.executable, str(Path(__file__).resolve()),
                             "--_echo", str(port)], cwd=REPO, start_new_session=True)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        fake = Server.__new__(Server)  # the client only needs the front, the port and the process to account
        fake.front, fake.port, fake.proc, fake.t0 = "service", port, echo, time.time()
        fake.alive = lambda: None
        fake.wait_quiet = lambda limit=0: 0.0
        seconds = min(args.seconds, 5.0)
        fake.log_size = lambda: 0
        fake.log_findings = lambda since=0: {}
        return [with_retries(lambda: run_open_loop(fake, ids, rate, seconds, args.client_core, tmp, args, seed=50 + j),
                             args.retries, f"client floor {rate:g}/s") for j, rate in enumerate(rates)]
    finally:
        os.killpg(echo.pid, signal.SIGTERM)
        echo.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=10_000, help="synthetic catalogue size (default 10,000)")
    p.add_argument("--run", default=None, help="serve the catalogue of this run directory instead")
    p.add_argument("--no-answer-table", action="store_true",
                   help="synthetic index without its answer table: every answer searches the index (the path "
                        "of a request for more than the table's K items)")
    p.add_argument("--rates", default="50,200,1000", help="open-loop rates, req/s (default 50,200,1000)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per open-loop rate (default 15)")
    p.add_argument("--front-ends", default=",".join(FRONT_ENDS), help="service,mlflow (default both)")
    p.add_argument("--connections", default="8,16,32,64", help="wrk connection counts (default 8,16,32,64)")
    p.add_argument("--wrk-seconds", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--calls", type=int, default=1000, help="in-process calls per figure (default 1000)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=10.0, help="a request unanswered this long is an error (s)")
    p.add_argument("--max-connections", type=int, default=256, help="the open-loop client's connection cap")
    p.add_argument("--client-loop", choices=("asyncio", "uvloop"), default="asyncio",
                   help="the open-loop client's event loop (asyncio: the lower floor measured here)")
    p.add_argument("--quiet-wait", type=float, default=120.0,
                   help="before each run, wait up to this long for both cores to idle (default 120 s)")
    p.add_argument("--retries", type=int, default=2,
                   help="measure a run again (at most this many times) when other processes took over "
                        f"{OTHER_LOAD_LIMIT['server']:g}%% of the server core or {OTHER_LOAD_LIMIT['client']:g}%% "
                        "of the client core during it (default 2)")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--client-core", type=int, default=0)
    p.add_argument("--json", default=None, help="write every figure to this file")
    p.add_argument("--_client", help=argparse.SUPPRESS)
    p.add_argument("--_inprocess", help=argparse.SUPPRESS)
    p.add_argument("--_echo", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._client:
        return client_main(args._client)
    if args._inprocess:
        return inprocess_main(args._inprocess)
    if args._echo:
        return echo_main(args._echo)

    fronts = [f.strip() for f in args.front_ends.split(",") if f.strip()]
    if unknown := set(fronts) - set(FRONT_ENDS):
        raise SystemExit(f"unknown front end(s) {sorted(unknown)}; choose from {FRONT_ENDS}")
    if "service" in fronts and not (REPO / "tasks" / "serve.py").exists():
        raise SystemExit("tasks/serve.py is not in this tree: run with --front-ends mlflow")
    rates = [float(r) for r in args.rates.split(",")]
    conns = [int(c) for c in args.connections.split(",")]
    if not shutil.which("taskset"):
        raise SystemExit("taskset is missing: apt-get install util-linux")
    cores = sorted(os.sched_getaffinity(0))
    if args.server_core == args.client_core or {args.server_core, args.client_core} - set(cores):
        raise SystemExit(f"--server-core {args.server_core} and --client-core {args.client_core} must be two "
                         f"different cores of {cores}")
    tool = closed_loop_tool()

    import mlflow
    import psutil

    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), platform.processor())
    results: dict = {
        "command": " ".join(["python", "bench/bench_serving.py"] + sys.argv[1:]),
        "git_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     cwd=REPO).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model,
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "mlflow": mlflow.__version__,
                    "loadavg_before": os.getloadavg()},
        "server_core": args.server_core, "client_core": args.client_core, "rates": rates,
        "seconds": args.seconds, "wrk_seconds": args.wrk_seconds, "connections": conns, "calls": args.calls,
        "k": args.k, "timeout_s": args.timeout, "max_connections": args.max_connections,
        "answer_table": None if args.run else not args.no_answer_table,
        "closed_loop_tool": tool, "retries": args.retries, "client_loop": args.client_loop, "front_ends": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        art = run_catalogue(Path(args.run)) if args.run else synthetic_catalogue(
            tmp / "catalogue", args.items, answer_table=not args.no_answer_table)
        uri = register_champion(art, tmp)
        ids = np.asarray(art["ids"]).astype(str)
        results["items"] = len(ids)
        print(f"champion registered in {time.time() - t0:.1f}s ({len(ids):,} items, store {uri})", flush=True)

        results["client_floor"] = client_floor(ids, rates, tmp, args)
        results["client_affinity"] = results["client_floor"][0]["client_affinity"]
        for o in results["client_floor"]:
            print(f"  client floor {o['target_rps']:g}/s: issued {o['issued_rps']:.0f}/s p50 {_f(o['p50'], 2)} "
                  f"p99 {_f(o['p99'], 2)} max {_f(o['max'], 1)} ms, lateness p99 {o['issue_lag_p99_ms']:.2f} ms",
                  flush=True)

        for front in fronts:
            spec, out = tmp / f"inprocess_{front}.json", tmp / f"inprocess_{front}.out.json"
            spec.write_text(json.dumps({"front": front, "ids": sample_ids(ids, args.calls, 3), "k": args.k,
                                        "out": str(out)}))
            def measure_in_process() -> dict:
                quiet = wait_machine_quiet(args.quiet_wait)
                with CpuAccount(None, args.server_core, args.server_core) as acc:  # the child runs on the server core
                    _run_self(args.server_core, "--_inprocess", str(spec),
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri})
                res = json.loads(out.read_text())
                res.update(before=quiet, other_pct_server_core=acc.figures["other_pct_client_core"],
                           other_pct_client_core=0.0, core_busy_pct=acc.figures["core_busy_pct"])
                return res

            ip = with_retries(measure_in_process, args.retries, f"{front} in process")
            results["in_process_affinity"] = ip["affinity"]
            if ip.get("error"):
                print(f"in-process {front} failed: {ip['error']}", flush=True)
            else:
                print(f"  {front} in process: " + ", ".join(f"{n.split(' (')[0]} {t['mean']:.3f}"
                                                            for n, t in ip["calls"].items()) + " ms", flush=True)

            r: dict = {"in_process": ip, "cpu_reference_ms": [cpu_reference(args.server_core)]}
            server = Server(front, uri, tmp, args.server_core, args.k)
            try:
                r["ready_s"] = server.wait_ready()
                r["pinning"] = affinity_of_tree(server.proc.pid)
                r.update(command=" ".join(server.cmd), version=server.version, health=server.health_body,
                         open_loop=[], closed_loop=[])
                print(f"{front} up in {r['ready_s']:.1f}s; pinning: " + "; ".join(
                    f"pid {p_['pid']} cpus {p_['cpus']}" for p_ in r["pinning"]), flush=True)
                run_open_loop(server, ids, 20, 3, args.client_core, tmp, args, seed=99)  # warm-up
                for j, rate in enumerate(rates):
                    o = with_retries(lambda: run_open_loop(server, ids, rate, args.seconds, args.client_core, tmp,
                                                           args, seed=j), args.retries, f"{front} open loop {rate:g}/s")
                    r["open_loop"].append(o)
                    print(f"  {front} open loop {rate:g}/s: issued {o['issued_rps']:.0f}/s answered "
                          f"{o['answered_rps']:.0f}/s errors {o['errors']} p50 {_f(o['p50'], 2)} "
                          f"p99 {_f(o['p99'], 2)} max {_f(o['max'], 1)} ms; cores busy {o['core_busy_pct']}%, other "
                          f"load on the server core {o['other_pct_server_core']}%", flush=True)
                for c in conns:
                    w = with_retries(lambda: run_closed_loop(server, tool, ids, c, args.wrk_seconds, args.client_core,
                                                             tmp, args), args.retries, f"{front} {tool} -c{c}")
                    r["closed_loop"].append(w)
                    print(f"  {front} {tool} -c{c}: {w['rps']:.0f} req/s p50 {_f(w['p50'], 2)} p99 "
                          f"{_f(w['p99'], 2)} ms non-2xx {w['non_2xx']} socket {w['socket_errors']}; cores busy "
                          f"{w['core_busy_pct']}%, other load on the server core {w['other_pct_server_core']}%",
                          flush=True)
                r["server_rss_mb"] = round(sum(psutil.Process(p_["pid"]).memory_info().rss for p_ in r["pinning"]
                                               if psutil.pid_exists(p_["pid"])) / 2**20, 1)
            finally:
                server.stop()
            r["log"] = server.log_findings()
            r["cpu_reference_ms"].append(cpu_reference(args.server_core))  # the server stopped: core idle
            results["front_ends"][front] = r
        results["machine"]["loadavg_after"] = os.getloadavg()
    results["bar"] = bar_verdict(results)
    print("\n" + report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
