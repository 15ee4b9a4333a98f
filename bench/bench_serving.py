"""Latency of the served champion: `mlflow models serve` on loopback, single-item requests at a fixed rate.

    python bench/bench_serving.py                     # 10,000 items, 50 and 200 requests/s, 20 s each
    python bench/bench_serving.py --items 100000 --rates 50,100 --seconds 30
    python bench/bench_serving.py --run runs/demo     # the catalogue of a trained run directory

Builds a champion the way the register step does (``tasks.mlflow_model.log_recommender``: network,
embeddings, faiss index, titles) in a throw-away local MLflow store, registers it with the alias
``champion`` and starts ``mlflow models serve -m models:/bench@champion --env-manager local``. Without
``--run`` the catalogue is synthetic (seeded unit vectors, an untrained network of the default
size): serving never runs the network, so the request path is the one a trained champion takes.

Then an open-loop load: requests are sent at fixed instants (``rate`` per second, whatever the
answers' speed, so a slow server queues them as real traffic would), each a JSON body with one
``item_id`` and ``params: {k: 10}``, from a pool of client threads. Prints per rate: requests,
errors, achieved rate, latency p50 / p90 / p99 / max (ms, from the scheduled send instant), and a
breakdown of one in-process call (pandas frame, catalogue lookup, faiss search) to say where the
time goes. The load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_catalogue(root: Path, n_items: int, dim: int = 128, seed: int = 0) -> dict:
    """items.parquet, embeddings/, index/ and an (untrained) model dir of the default size."""
    import pandas as pd
    import pyarrow as pa
    import torch

    from pinsage.export.embeddings import write_embeddings
    from pinsage.export.index import build_index, save_index
    from pinsage.util.io import write_table
    from pinsage.model.network import ModelConfig, PinSage, save_model

    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(n_items)])
    emb = rng.standard_normal((n_items, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    write_table(root / "items.parquet", pa.Table.from_pandas(
        pd.DataFrame({"item_id": ids, "title": [f"item {k}" for k in range(n_items)]}), preserve_index=False))
    write_embeddings(root / "embeddings", ids, emb)
    save_index(root / "index", build_index(emb), ids)
    torch.manual_seed(seed)
    save_model(PinSage(ModelConfig(input_dim=257, n_items=n_items, output_dim=dim)), root / "model")
    return {"model_dir": root / "model", "embeddings": root / "embeddings", "index": root / "index",
            "items": root / "items.parquet", "ids": ids}


def run_catalogue(run: Path) -> dict:
    import pyarrow.parquet as pq

    model = run / "export" / "model" if (run / "export" / "model" / "model.pt").exists() else run / "train"
    ids = pq.read_table(run / "prepare" / "items.parquet", columns=["item_id"]).column(0).to_numpy().astype(str)
    return {"model_dir": model, "embeddings": run / "embeddings", "index": run / "index",
            "items": run / "prepare" / "items.parquet", "ids": ids}


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


def breakdown(art: dict, n: int = 300) -> dict[str, float]:
    """Mean ms of the pieces of one single-item answer, in this process (no HTTP)."""
    import pandas as pd

    from pinsage.serve.recommend import Catalogue

    cat = Catalogue.from_dirs(art["index"], art["embeddings"], art["items"])
    rng = np.random.default_rng(1)
    qs = [str(art["ids"][i]) for i in rng.integers(0, len(art["ids"]), n)]
    out = {}
    t = time.perf_counter()
    for q in qs:
        pd.DataFrame({"item_id": [q]})
    out["pandas input frame"] = (time.perf_counter() - t) / n * 1e3
    t = time.perf_counter()
    for q in qs:
        cat.embeddings[cat.row_of.get_loc(q)][None, :]
    out["catalogue lookup"] = (time.perf_counter() - t) / n * 1e3
    vecs = cat.embeddings[[cat.row_of.get_loc(q) for q in qs]]
    t = time.perf_counter()
    for v in vecs:
        cat.index.search(v[None, :], 11)
    out["faiss search (k + 1)"] = (time.perf_counter() - t) / n * 1e3
    t = time.perf_counter()
    for q in qs:
        cat.related([q], [10])
    out["whole Catalogue.related"] = (time.perf_counter() - t) / n * 1e3
    return out


def load(url: str, ids: np.ndarray, rate: float, seconds: float, threads: int = 32) -> dict:
    """Open-loop: request i is due at start + i / rate; latency counts from that instant."""
    import requests

    local = threading.local()
    rng = np.random.default_rng(int(rate))
    n = int(rate * seconds)
    queries = [str(ids[i]) for i in rng.integers(0, len(ids), n)]
    start = time.perf_counter() + 0.5

    def one(i: int):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        session = getattr(local, "s", None) or requests.Session()
        local.s = session
        try:
            r = session.post(url, json={"dataframe_records": [{"item_id": queries[i]}], "params": {"k": 10}},
                             timeout=10)
            ok = r.ok and len(r.json()["predictions"]) == 10
        except Exception:  # noqa: BLE001  (a refused or timed-out request is an error, counted)
            ok = False
        return (time.perf_counter() - due) * 1e3, ok

    with cf.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - start
    lat = np.array([r[0] for r in results])
    return {"requests": n, "errors": int(sum(not r[1] for r in results)), "achieved_rps": n / elapsed,
            **{f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)}, "max": float(lat.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--run", default=None, help="serve the catalogue of this run directory instead")
    p.add_argument("--rates", default="50,200")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=1, help="mlflow models serve --workers")
    args = p.parse_args()
    import requests

    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        tmp = Path(tmp)
        art = run_catalogue(Path(args.run)) if args.run else synthetic_catalogue(tmp / "catalogue", args.items)
        uri = register_champion(art, tmp)
        port = _free_port()
        log = open(tmp / "serve.log", "wb")
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/bench@champion",
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
                                   "--workers", str(args.workers)],
                                  env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=tmp, start_new_session=True)
        try:
            t0 = time.perf_counter()
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if server.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit("the model server did not start:\n" + (tmp / "serve.log").read_text()[-3000:])
                time.sleep(0.5)
            print(f"mlflow models serve up in {time.perf_counter() - t0:.1f}s; {len(art['ids']):,} items, "
                  f"{args.workers} worker(s), {os.cpu_count()} CPUs shared with the load generator", flush=True)
            url = f"http://127.0.0.1:{port}/invocations"
            load(url, art["ids"], 20, 2)  # warm-up
            rows = []
            for rate in (float(r) for r in args.rates.split(",")):
                rows.append((rate, load(url, art["ids"], rate, args.seconds)))
                print(f"  {rate:g} req/s: {rows[-1][1]}", flush=True)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
        print("\n| offered req/s | requests | errors | achieved req/s | p50 ms | p90 ms | p99 ms | max ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate, r in rows:
            print(f"| {rate:g} | {r['requests']} | {r['errors']} | {r['achieved_rps']:.0f} | {r['p50']:.1f} | "
                  f"{r['p90']:.1f} | {r['p99']:.1f} | {r['max']:.0f} |")
        print("\nOne answer in process (mean ms): " + ", ".join(f"{k} {v:.3f}" for k, v in breakdown(art).items()))


if __name__ == "__main__":
    main()
