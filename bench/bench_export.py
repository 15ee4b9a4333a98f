"""MapReduce export vs per-item inference (paper Section 3.4).

    python bench/bench_export.py [--items 100000 --contexts 50000 --edges 2000000 --top-t 50 --layers 2]

Builds a synthetic power-law graph, its top-T importance neighbourhoods and an untrained PinSage of
the CPU default size, then times (a) the layer-by-layer export of the whole catalogue and (b) the
training path (a K-hop computation graph per item) on a random sample of items, extrapolated to the
catalogue. Both produce the same vectors (checked on the sample); the speed-up is the ratio.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import synthetic_features, synthetic_graph  # noqa: E402
from pinsage.export.embed import export_embeddings, per_item_embeddings  # noqa: E402
from pinsage.graph.walks import WalkConfig, random_walk_neighbors  # noqa: E402
from pinsage.model.network import ModelConfig, PinSage  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--contexts", type=int, default=50_000)
    p.add_argument("--edges", type=int, default=2_000_000)
    p.add_argument("--top-t", type=int, default=50)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--feature-dim", type=int, default=257)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--output-dim", type=int, default=128)
    p.add_argument("--sample", type=int, default=300, help="items embedded one by one for the baseline")
    p.add_argument("--batch", type=int, default=512, help="minibatch size of the batched baseline")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    g = synthetic_graph(args.items, args.contexts, args.edges, seed=args.seed)
    feats = synthetic_features(args.items, args.feature_dim, seed=args.seed)
    t0 = time.perf_counter()
    nbrs, _ = random_walk_neighbors(g, WalkConfig(top_t=args.top_t, seed=args.seed))
    t_walk = time.perf_counter() - t0
    model = PinSage(ModelConfig(input_dim=args.feature_dim, n_items=args.items, hidden_dim=args.hidden_dim,
                                output_dim=args.output_dim, n_layers=args.layers),
                    feats.mean(0), feats.std(0))

    t0 = time.perf_counter()
    exported = export_embeddings(model, feats, nbrs)
    t_export = time.perf_counter() - t0

    sample = np.random.default_rng(args.seed).choice(args.items, size=args.sample, replace=False)
    t0 = time.perf_counter()
    single = per_item_embeddings(model, feats, nbrs, sample, batch_size=1)
    t_single = (time.perf_counter() - t0) / args.sample * args.items
    err = float(np.abs(single - exported[sample]).max())
    batch_sample = np.random.default_rng(args.seed + 1).choice(args.items, size=args.batch, replace=False)
    t0 = time.perf_counter()
    batched = per_item_embeddings(model, feats, nbrs, batch_sample, batch_size=args.batch)
    t_batched = (time.perf_counter() - t0) / args.batch * args.items
    err = max(err, float(np.abs(batched - exported[batch_sample]).max()))

    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"graph: {g.n_items:,} items, {g.n_contexts:,} contexts, {g.n_edges:,} edges; "
          f"T={args.top_t}, K={args.layers}, hidden {args.hidden_dim}, output {args.output_dim}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"neighbourhoods (random walks): {t_walk:.1f} s")
    print("| inference | items/s | catalogue time (s) |")
    print("|---|---:|---:|")
    print(f"| MapReduce export (layer by layer) | {args.items / t_export:,.0f} | {t_export:.1f} |")
    print(f"| per-item computation graphs (sample of {args.sample}, extrapolated) | "
          f"{args.items / t_single:,.0f} | {t_single:.1f} |")
    print(f"| training-path minibatches of {args.batch} (one batch, extrapolated) | "
          f"{args.items / t_batched:,.0f} | {t_batched:.1f} |")
    print(f"speed-up: {t_single / t_export:.1f}x over per-item, {t_batched / t_export:.1f}x over "
          f"minibatches; max |export - per-item| on the sample: {err:.2e}; "
          f"peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
