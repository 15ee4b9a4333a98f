"""Project the measured per-stage costs to the paper's graph: 3 B nodes (2 B pins, 1 B boards), 18 B edges.

    python bench/bench_stages_scale.py --json runs/bench_stages.json
    python bench/project_paper_scale.py runs/bench_stages.json [--workers 500]

A "worker" is the unit the figures were measured on: this machine's 2 cores (the ``local`` engine's
numba threads, or a 2-CPU local Ray cluster). Each stage's rate is taken at the largest measured
size and scaled by what the stage's cost is proportional to:

- neighbourhoods: items (a fixed number of walks per item), rate in items/s per worker;
- train: training examples (the paper's 1.2 B positive pairs for one pass), examples/s per worker;
- export: items (every item once per layer), items/s per worker;
- index: items, HNSW build items/s per worker (the index is sharded: one HNSW per worker's slice).

Memory: the walk tables cost ``graph_bytes / edges`` per edge and are held once per node in Ray's
object store (read zero-copy by every worker on it); each worker adds the private memory measured
at the largest size. This is a linear extrapolation from at most 10^7 edges (10^-3 of the paper's
graph): it ignores network shuffle costs, stragglers and the cache effects that already make walks
slower per edge as the graph grows, so read it as a lower bound on hours.
"""

from __future__ import annotations

import argparse
import json

PAPER_ITEMS = 2_000_000_000  # pins: the items that are walked from, embedded and indexed
PAPER_EDGES = 18_000_000_000
PAPER_EXAMPLES = 1_200_000_000  # positive training pairs (paper Sec. 4)
GIB = 2 ** 30


def project(results: dict, workers: int) -> list[dict]:
    largest = max(results["sizes"], key=lambda r: r["edges"])
    rows = []
    for s in largest["stages"]:
        total = PAPER_EXAMPLES if s["stage"] == "train" else PAPER_ITEMS
        worker_hours = total / s["rate"] / 3600
        rows.append({"stage": s["stage"], "engine": s["engine"], "rate": s["rate"], "unit": s["unit"],
                     "worker_hours": worker_hours, "hours": worker_hours / workers})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("results", help="JSON written by bench/bench_stages_scale.py --json")
    p.add_argument("--workers", type=int, default=500, help="2-core workers in the cluster")
    p.add_argument("--workers-per-node", type=int, default=32, help="2-core workers sharing one node's memory")
    a = p.parse_args(argv)
    results = json.load(open(a.results))
    largest = max(results["sizes"], key=lambda r: r["edges"])
    print(f"from {largest['edges']:,} measured edges ({results['device']}, "
          f"{'paper' if results['paper_dims'] else 'CPU default'} dimensions) to {PAPER_EDGES:,} edges, "
          f"{PAPER_ITEMS:,} items, {PAPER_EXAMPLES:,} training examples; {a.workers} workers of 2 cores\n")
    print("| stage | engine | measured rate per worker | worker-hours | hours on the cluster |")
    print("|---|---|---:|---:|---:|")
    for r in project(results, a.workers):
        print(f"| {r['stage']} | {r['engine']} | {r['rate']:,.0f} {r['unit']} | {r['worker_hours']:,.0f} | "
              f"{r['hours']:,.1f} |")
    walks = largest.get("ray_walks")
    if walks:
        per_edge = walks["graph_bytes"] / largest["edges"]
        graph_gib = per_edge * PAPER_EDGES / GIB
        private_gib = walks["worker_private_bytes"] / GIB
        node_gib = graph_gib + a.workers_per_node * private_gib
        print(f"\nneighbourhood stage memory: walk tables {per_edge:.1f} B/edge -> {graph_gib:,.0f} GiB held once "
              f"per node (zero-copy: {walks['zero_copy']}); per worker private {private_gib * 1024:,.0f} MiB "
              f"(measured at {largest['edges']:,} edges); a node of {a.workers_per_node} workers needs "
              f"~{node_gib:,.0f} GiB, so {-(-a.workers // a.workers_per_node)} such nodes for {a.workers} workers")
    print("\nlinear extrapolation: a lower bound (no shuffle network cost, no stragglers, no cache effects)")


if __name__ == "__main__":
    main()
