"""Can the producer processes feed the trainer? Minibatch production rate per producer process.

    python bench/bench_sampler.py                       # 1e5 1e6 1e7 edges; CPU and paper settings
    python bench/bench_sampler.py --edges 1e7

Training is a producer-consumer pipeline: ``MinibatchProducer`` runs in ``--workers`` DataLoader
processes (positive pairs, shared and hard negatives, the K-hop computation graph, feature gather)
while the trainer consumes. This times ``make_batch`` alone, in one process, for the CPU default
(T = 20, minibatch 512) and the paper's settings (T = 50, minibatch 2048; K = 2 and 500 shared
negatives in both), on the same seeded power-law graphs as ``bench_stages_scale.py`` with 64-d
features. Producers are independent processes, so N of them supply about N times this rate; the
last column is how many it takes to keep up with the issue's GPU goal of 15,000 examples/s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_stages_scale import FEATURE_DIM, _positive_pairs  # noqa: E402
from bench.synthetic import synthetic_features, synthetic_graph  # noqa: E402
from pinsage.graph.walks import WalkConfig, random_walk_neighbors  # noqa: E402
from pinsage.model.sampler import MinibatchProducer, SamplerConfig  # noqa: E402

GPU_GOAL = 15_000  # examples/s on one H200 at paper dimensions (the scale issue's goal)
SETTINGS = (("CPU default", 20, 512), ("paper", 50, 2048))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--edges", nargs="+", type=float, default=[1e5, 1e6, 1e7])
    p.add_argument("--batches", type=int, default=5, help="minibatches timed per row (after one warm-up)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print("| edges | items | settings | T | minibatch | input nodes per batch | s per batch | "
          "examples/s per producer | producers for 15,000/s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for e in a.edges:
        graph = synthetic_graph(int(e) // 20, int(e) // 40, int(e), seed=a.seed)
        feats = synthetic_features(graph.n_items, FEATURE_DIM, seed=a.seed)
        candidates = np.flatnonzero(graph.item_degree() > 0)
        for name, top_t, batch in SETTINGS:
            nbrs, _ = random_walk_neighbors(graph, WalkConfig(top_t=top_t, seed=a.seed))
            pairs = _positive_pairs(graph, (a.batches + 1) * batch, a.seed)
            cfg = SamplerConfig(batch_size=batch, n_shared_negatives=500, hard_negatives=False)
            producer = MinibatchProducer(pairs, feats, nbrs, None, cfg, 0, a.seed, candidates, 2)
            producer.make_batch(0)  # warm-up
            nodes, t0 = 0, time.perf_counter()
            for b in range(1, a.batches + 1):
                nodes += len(producer.make_batch(b).x)
            per_batch = (time.perf_counter() - t0) / a.batches
            rate = batch / per_batch
            print(f"| {graph.n_edges:,} | {graph.n_items:,} | {name} | {top_t} | {batch} | "
                  f"{nodes // a.batches:,} | {per_batch:.3f} | {rate:,.0f} | {math.ceil(GPU_GOAL / rate)} |",
                  flush=True)


if __name__ == "__main__":
    main()
