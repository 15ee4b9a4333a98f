"""Every heavy stage at 10^5, 10^6 and 10^7 edges: neighbourhoods, training, export, index.

    python bench/bench_stages_scale.py                          # 1e5 1e6 1e7 edges, local + ray
    python bench/bench_stages_scale.py --edges 1e5 --engines local
    python bench/bench_stages_scale.py --device cuda --paper-dims --edges 1e7 --engines local  # GPU

Each size runs in a fresh process (so its peak RSS is its own) on a seeded power-law graph from
``bench/synthetic.py`` (20 edges per item, 40 per context) with 64-d synthetic item features:

- neighbourhoods: random walks from every item, top-T (``local`` in-process, ``ray`` a local Ray
  with ``--cpus`` workers reading the graph zero-copy from the object store);
- train: examples/s of the real training loop (``train_model``: producer process, K-hop computation
  graphs, sampled softmax over 500 shared negatives), measured as the difference between a
  ``--train-steps`` and a ``3 * --train-steps`` run (after a warm-up run) so start-up cancels out. With
  CUDA, the GPU's mean utilisation over the longer run (nvidia-smi, every 0.2 s). Hard negatives are
  off here: their visit table is N x min(5% N, 5000) ranks and does not fit at 10^7 edges (docs/paper_differences.md);
- export: items/s of the layer-by-layer MapReduce export of the model just trained, per engine;
- index: faiss build time, exact (flat) QPS, and HNSW at the smallest efSearch whose recall@10
  against exact search is >= 0.95 (QPS over the same queries, batched, all threads).

Prints one Markdown row per size and stage, and the seconds per million edges, which stay flat
when a stage's cost grows linearly in edges.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURE_DIM = 64
N_QUERIES = 2000
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class GpuUtilisation:
    """Mean GPU utilisation (%) from nvidia-smi while the ``with`` block runs (None without CUDA)."""

    def __init__(self, enabled: bool):
        self.enabled, self.samples, self._stop = enabled, [], threading.Event()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _positive_pairs(graph, n_pairs: int, seed: int) -> np.ndarray:
    """Items engaged by the same context: a random edge's item and another item of its context."""
    rng = np.random.default_rng(seed)
    edge = rng.integers(0, graph.n_edges, size=n_pairs)
    context = np.searchsorted(graph.context_indptr, edge, side="right") - 1
    start, deg = graph.context_indptr[context], np.diff(graph.context_indptr)[context]
    other = start + rng.integers(0, np.maximum(deg, 1))
    return np.stack([graph.context_items[edge], graph.context_items[other]], axis=1).astype(np.int64)


def _train(graph, feats, nbrs, a) -> tuple[object, dict]:
    import dataclasses

    import torch

    from pinsage.model.network import ModelConfig, PinSage
    from pinsage.model.sampler import SamplerConfig
    from pinsage.model.train import TrainConfig, TrainData, train_model

    hidden, out = (2048, 1024) if a.paper_dims else (256, 128)
    batch = 2048 if a.paper_dims else 512
    sampler = SamplerConfig(batch_size=batch, n_shared_negatives=500, hard_negatives=False)
    cfg = TrainConfig(epochs=1, num_workers=a.workers, device=a.device, warmup_steps=1, sampler=sampler,
                      precision="bf16" if a.paper_dims else "fp32", seed=a.seed)
    candidates = np.flatnonzero(graph.item_degree() > 0)
    timings = {}
    for steps in (2, a.train_steps, 3 * a.train_steps):  # the first run only warms up (imports, kernels)
        torch.manual_seed(a.seed)
        model = PinSage(ModelConfig(input_dim=feats.shape[1], n_items=len(feats), hidden_dim=hidden,
                                    output_dim=out, n_layers=2), feats.mean(0), feats.std(0))
        pairs = _positive_pairs(graph, steps * batch, a.seed)
        with GpuUtilisation(a.device == "cuda" and steps > a.train_steps) as gpu:
            t0 = time.perf_counter()
            data = TrainData(lambda e: pairs, feats, nbrs, None, candidates)
            model, _ = train_model(model, data, dataclasses.replace(cfg), log=lambda s: None)
            timings[steps] = time.perf_counter() - t0
    extra = 2 * a.train_steps * batch
    return model, {"examples_per_s": extra / (timings[3 * a.train_steps] - timings[a.train_steps]),
                   "batch": batch, "hidden": hidden, "output": out, "gpu_util": gpu.mean}


def _index(emb: np.ndarray, seed: int) -> dict:
    import faiss

    from pinsage.export.index import IndexConfig, build_index

    rng = np.random.default_rng(seed)
    queries = emb[rng.choice(len(emb), size=min(N_QUERIES, len(emb)), replace=False)]
    t0 = time.perf_counter()
    flat = build_index(emb, IndexConfig(kind="flat"))
    flat_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, truth = flat.search(queries, 10)
    flat_qps = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    hnsw = build_index(emb, IndexConfig(kind="hnsw"))
    hnsw_build = time.perf_counter() - t0
    result = {"flat_build_s": flat_build, "flat_qps": flat_qps, "hnsw_build_s": hnsw_build}
    for ef in EF_SEARCH:
        hnsw.hnsw.efSearch = ef
        t0 = time.perf_counter()
        _, found = hnsw.search(queries, 10)
        qps = len(queries) / (time.perf_counter() - t0)
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        result.update(ef_search=ef, hnsw_qps=qps, recall_at_10=recall)
        if recall >= 0.95:
            break
    result["threads"] = faiss.omp_get_max_threads()
    return result


def run_one(edges: int, a) -> dict:
    """All stages at one size, in this process. Returns the figures as a dict."""
    from bench.synthetic import synthetic_features, synthetic_graph
    from pinsage.export.embed import export_embeddings
    from pinsage.graph.walks import WalkConfig, random_walk_neighbors

    graph = synthetic_graph(edges // 20, edges // 40, edges, seed=a.seed)
    feats = synthetic_features(graph.n_items, FEATURE_DIM, seed=a.seed)
    walk_cfg = WalkConfig(top_t=50 if a.paper_dims else 20, seed=a.seed)
    r = {"edges": graph.n_edges, "items": graph.n_items, "top_t": walk_cfg.top_t, "stages": []}
    session = None
    if "ray" in a.engines:
        from pinsage.engines.ray_session import ray_session
        from pinsage.engines.ray_walks import random_walk_neighbors_ray

        session = ray_session(num_cpus=a.cpus)
        session.__enter__()
        tiny = synthetic_graph(200, 100, 2000, seed=1)
        random_walk_neighbors_ray(tiny, walk_cfg)  # warm-up: workers started, numba compiled
    random_walk_neighbors(synthetic_graph(200, 100, 2000, seed=1), walk_cfg)  # numba compile, untimed
    try:
        nbrs = None
        for engine in a.engines:
            t0 = time.perf_counter()
            stats: dict = {}
            if engine == "ray":
                nb, _ = random_walk_neighbors_ray(graph, walk_cfg, stats=stats)
            else:
                nb, _ = random_walk_neighbors(graph, walk_cfg)
            seconds = time.perf_counter() - t0
            r["stages"].append({"stage": "neighbourhoods", "engine": engine, "seconds": seconds,
                                "rate": graph.n_items / seconds, "unit": "items/s"})
            if stats:  # per Ray worker: private memory against the shared graph (zero-copy evidence)
                r["ray_walks"] = {k: stats[k] for k in ("graph_bytes", "worker_private_bytes",
                                                        "worker_peak_rss_bytes", "zero_copy")}
            nbrs = nb if nbrs is None else nbrs
        r["peak_rss_after_neighbourhoods_mib"] = _peak_rss_mib()
        model, train = _train(graph, feats, nbrs, a)
        r["train"] = train
        r["stages"].append({"stage": "train", "engine": "local (" + a.device + ")",
                            "seconds": graph.n_edges / train["examples_per_s"],  # one example per edge
                            "rate": train["examples_per_s"], "unit": "examples/s"})
        r["peak_rss_after_train_mib"] = _peak_rss_mib()
        emb = None
        for engine in a.engines:
            t0 = time.perf_counter()
            if engine == "ray":
                from pinsage.engines.ray_export import export_embeddings_ray

                e = export_embeddings_ray(model, feats, nbrs)
            else:
                e = export_embeddings(model, feats, nbrs)
            seconds = time.perf_counter() - t0
            r["stages"].append({"stage": "export", "engine": engine, "seconds": seconds,
                                "rate": graph.n_items / seconds, "unit": "items/s"})
            emb = e if emb is None else emb
        r["peak_rss_after_export_mib"] = _peak_rss_mib()
        idx = _index(emb, a.seed)
        r["index"] = idx
        r["stages"].append({"stage": "index (HNSW build)", "engine": "local", "seconds": idx["hnsw_build_s"],
                            "rate": graph.n_items / idx["hnsw_build_s"], "unit": "items/s"})
        r["peak_rss_mib"] = _peak_rss_mib()
    finally:
        if session is not None:
            session.__exit__(None, None, None)
    return r


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--edges", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    p.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--paper-dims", action="store_true",
                   help="hidden 2048, output 1024, T=50, batch 2048, bf16 autocast (for a GPU)")
    p.add_argument("--train-steps", type=int, default=10, help="minibatches of the shorter training run")
    p.add_argument("--workers", type=int, default=1, help="minibatch producer processes")
    p.add_argument("--cpus", type=int, default=2, help="Ray workers of the local cluster")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the figures as JSON (input of bench/project_paper_scale.py)")
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)  # internal: one size, JSON out
    a = p.parse_args(argv)
    if a.one is not None:
        print("RESULT " + json.dumps(run_one(int(a.one), a)), flush=True)
        return
    rows = []
    for e in a.edges:
        cmd = [sys.executable, __file__, "--one", str(e), "--engines", *a.engines, "--device", a.device,
               "--train-steps", str(a.train_steps), "--workers", str(a.workers), "--cpus", str(a.cpus),
               "--seed", str(a.seed)] + (["--paper-dims"] if a.paper_dims else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"size {e:g} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
    if a.json:
        Path(a.json).write_text(json.dumps({"device": a.device, "paper_dims": a.paper_dims, "ray_cpus": a.cpus,
                                            "sizes": rows}, indent=1))
    print(f"device {a.device}; {'paper' if a.paper_dims else 'CPU default'} dimensions; "
          f"Ray: local cluster of {a.cpus} CPUs\n")
    print("| stage | engine | edges | items | seconds | rate | s per M edges |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for s in r["stages"]:
            print(f"| {s['stage']} | {s['engine']} | {r['edges']:,} | {r['items']:,} | {s['seconds']:.1f} | "
                  f"{s['rate']:,.0f} {s['unit']} | {s['seconds'] / (r['edges'] / 1e6):.2f} |")
    print("\n| edges | train examples/s | GPU util | flat build s | flat QPS | HNSW build s | efSearch | "
          "HNSW QPS | recall@10 | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t, i = r["train"], r["index"]
        gpu = "-" if t["gpu_util"] is None else f"{t['gpu_util']:.0f}%"
        print(f"| {r['edges']:,} | {t['examples_per_s']:,.0f} | {gpu} | {i['flat_build_s']:.2f} | "
              f"{i['flat_qps']:,.0f} | {i['hnsw_build_s']:.1f} | {i['ef_search']} | {i['hnsw_qps']:,.0f} | "
              f"{i['recall_at_10']:.3f} | {r['peak_rss_mib']:,.0f} |")
    print("\ntrain 'seconds' = one pass over the graph's edges (one example per edge) at the measured rate.")


if __name__ == "__main__":
    main()
