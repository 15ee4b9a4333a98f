"""Ties in walk visit counts on ml-latest-small: how often the rank-T cut falls inside a tie, and the
bias of breaking those ties by item index (the old kernel) against the seeded tie keys (the kernel now).

    python bench/bench_ties.py --threads 1

Prepares ``data/ml-latest-small`` through the pipeline's ``prepare`` and ``graph`` stages into a
temporary run directory, then walks from every item with the default :class:`WalkConfig`. Visit
counts do not depend on the tie-break, so the tie statistics are the same before and after; the
BEFORE neighbourhoods are re-ranked here with numpy from the dense counts (count descending, then
item index ascending: the old kernel's order), the AFTER ones are the kernel's own tables (checked
against the same re-ranking with :func:`tie_keys`). Printed per ranking:

- mean catalogue-index percentile (0 = lowest id) of the neighbours chosen from inside the tie at the
  cut, and what a uniform pick within each tie gives in expectation;
- share of all neighbour slots held by the lowest-id 10% of the items, with the same expectation;
- the same share in the hard-negative band (visit ranks lo-hi, ``hard_negative_band``).
Then the fraction of rows cut inside a tie with ``--walks-many`` (2,000) walks per item.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script from anywhere: make `pinsage` / `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

from pinsage import pipeline  # noqa: E402
from pinsage.graph.bipartite import BipartiteGraph  # noqa: E402
from pinsage.graph.walks import WalkConfig, dense_visit_counts, tie_keys, visit_counts_topm  # noqa: E402
from pinsage.model.sampler import hard_negative_band  # noqa: E402
from pinsage.run.config import PipelineConfig  # noqa: E402
from pinsage.run.layout import RunDir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rank(dense: np.ndarray, keys: np.ndarray | None, depth: int) -> np.ndarray:
    """(S, depth) items by count descending, then tie key descending (``None``: index ascending);
    -1 where the count is 0."""
    n = dense.shape[1]
    second = np.broadcast_to(np.arange(n), dense.shape) if keys is None else -keys
    order = np.lexsort((second, -dense), axis=1)[:, :depth]
    return np.where(np.take_along_axis(dense, order, axis=1) > 0, order, -1)


class Tally:
    """Bias statistics of one ranking over the rows whose cut at rank ``t`` falls in a tie."""

    def __init__(self, n_items: int):
        self.n, self.low = n_items, np.arange(n_items) < n_items // 10  # the lowest-id 10%
        self.pct = np.arange(n_items) / (n_items - 1) * 100
        self.tie_pct, self.tie_pct_exp, self.slots, self.low_slots, self.low_exp = [], [], 0, 0, 0.0

    def add(self, dense_row: np.ndarray, top: np.ndarray, t: int, tied: bool) -> None:
        top = top[top >= 0]
        self.slots += len(top)
        self.low_slots += int(self.low[top].sum())
        if not tied:
            self.low_exp += self.low[top].sum()
            return
        theta = dense_row[top[-1]]
        chosen = top[dense_row[top] == theta]
        tie = np.flatnonzero(dense_row == theta)
        self.tie_pct.append(self.pct[chosen].mean())
        self.tie_pct_exp.append(self.pct[tie].mean())
        above = top[dense_row[top] > theta]
        self.low_exp += self.low[above].sum() + len(chosen) * self.low[tie].mean()

    def line(self) -> str:
        return (f"tie-chosen index percentile {np.mean(self.tie_pct):5.1f} "
                f"(uniform pick: {np.mean(self.tie_pct_exp):.1f}); "
                f"lowest-id 10% hold {self.low_slots / self.slots:6.1%} of slots (uniform pick: "
                f"{self.low_exp / self.slots:.1%})")


def _tie_rows(dense: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether it has a rank-t cut (at least t items visited), and whether that cut falls
    inside a tie (the t-th largest count is shared by an item left out)."""
    srt = -np.sort(-dense, axis=1)
    theta = srt[:, t - 1]
    return theta > 0, (theta > 0) & (srt[:, t] == theta)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "ml-latest-small"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--walks-many", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=500, help="sources per dense-count chunk (memory)")
    a = p.parse_args(argv)
    numba.set_num_threads(a.threads)
    wc = WalkConfig()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PipelineConfig(data=a.data, out=str(Path(tmp) / "run"))
        pipeline.prepare(cfg, log=lambda *_: None)
        pipeline.graph(cfg, log=lambda *_: None)
        g = BipartiteGraph.load(RunDir(cfg.out).graph_file)
    n, t = g.n_items, wc.top_t
    lo, hi = hard_negative_band(n, wc.walks_per_item * wc.max_walk_length)
    walk = (wc.walks_per_item, wc.restart_prob, wc.max_walk_length, wc.seed)
    kernel = visit_counts_topm(g, np.arange(n), hi, *walk)  # AFTER: the kernel's table, depth hi
    tied_rows = cut_rows = 0
    before, after = Tally(n), Tally(n)
    band = {"before": [0, 0], "after": [0, 0]}
    for s in range(0, n, a.chunk):
        src = np.arange(s, min(s + a.chunk, n))
        dense = dense_visit_counts(g, src, *walk)
        keys = tie_keys(wc.seed, src, np.arange(n))
        old, new = _rank(dense, None, hi), _rank(dense, keys, hi)
        assert np.array_equal(new, kernel.items[src]), "kernel order != count desc, tie key desc"
        has_cut, tied = _tie_rows(dense, t)
        cut_rows += int(has_cut.sum())
        tied_rows += int(tied.sum())
        for k in range(len(src)):
            before.add(dense[k], old[k, :t], t, bool(tied[k]))
            after.add(dense[k], new[k, :t], t, bool(tied[k]))
        for name, table in (("before", old), ("after", new)):
            b = table[:, lo:hi]
            b = b[b >= 0]
            band[name][0] += int((b < n // 10).sum())
            band[name][1] += len(b)
    print(f"ml-latest-small: {n:,} items, {g.n_contexts:,} contexts, {g.n_edges:,} training edges; "
          f"{wc.walks_per_item} walks/item, restart {wc.restart_prob}, max length {wc.max_walk_length}, "
          f"T = {t}, seed {wc.seed}, {a.threads} thread(s)")
    print(f"rows whose rank-{t} cut falls inside a tie: {tied_rows / cut_rows:.1%} of the {cut_rows:,} rows with "
          f">= {t} visited items ({tied_rows / n:.1%} of all {n:,}; {int((g.item_degree() == 0).sum()):,} items have "
          f"no training edge); a property of the counts: same before and after")
    print(f"BEFORE (ties by lowest index): {before.line()}")
    print(f"AFTER  (seeded tie keys):      {after.line()}")
    for name in ("before", "after"):
        low, tot = band[name]
        print(f"hard-negative band ranks {lo}-{hi}, {name:<6}: lowest-id 10% hold {low / max(tot, 1):.1%} of "
              f"{tot:,} filled slots")
    many = dataclasses.replace(wc, walks_per_item=a.walks_many)
    walk = (many.walks_per_item, many.restart_prob, many.max_walk_length, many.seed)
    cut_many = tied_many = 0
    for s in range(0, n, a.chunk):
        has_cut, tied = _tie_rows(dense_visit_counts(g, np.arange(s, min(s + a.chunk, n)), *walk), t)
        cut_many += int(has_cut.sum())
        tied_many += int(tied.sum())
    print(f"{a.walks_many} walks/item: rows whose rank-{t} cut falls inside a tie: {tied_many / cut_many:.1%} of "
          f"the {cut_many:,} rows with >= {t} visited items")
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
