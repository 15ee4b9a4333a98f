"""Probe for "a score that can say popular" (issue 28): a popularity prior added to a finished run's
PinSage scores, its weight chosen on the validation pairs. Nothing is retrained or changed.

    python bench/probe_popularity_prior.py RUN_DIR [RUN_DIR ...]

score(q, i) = cos(z_q, z_i) / tau + beta * log(1 + training interactions of i), tau the run's softmax
temperature; beta from ``BETAS``, chosen by validation MRR. The same sum is an inner product of
[z_q / tau ; 1] with [z_i ; beta log(1 + d_i)], so an index search stays exact. Prints, per run,
validation and test MRR / HR@10 for every beta, the chosen one, and paired-bootstrap intervals of the
chosen against beta = 0 and against the run's best baseline on validation (its ``ranks.parquet``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pinsage.eval.metrics import evaluate_scorer, metrics_from_ranks  # noqa: E402
from pinsage.eval.selection import best_baseline  # noqa: E402
from pinsage.eval.stats import paired_bootstrap  # noqa: E402
from pinsage.export.embeddings import read_embeddings  # noqa: E402
from pinsage.run.layout import RunDir  # noqa: E402

BETAS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def prior_scorer(emb: np.ndarray, prior: np.ndarray, tau: float, beta: float):
    """cos + tau beta prior: the order of cos / tau + beta prior, and at beta 0 exactly the run's scores."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    bias = (tau * beta * prior).astype(np.float32)[None, :]  # (1, N)
    return lambda q: emb[q] @ emb.T + bias  # (Q, N)


def probe(run: RunDir) -> None:
    ids, emb = read_embeddings(run.embeddings)
    assert np.array_equal(ids.astype(str), run.item_ids()), "embeddings not in catalogue order"
    degree = np.bincount(run.interactions(["item"])["item"].to_numpy(), minlength=len(ids))
    prior = np.log1p(degree).astype(np.float32)
    tau = float(run.config_dict()["train"]["temperature"])
    ranks = {}
    print(f"\n{run.root}: {len(ids):,} items, tau {tau:g}\n")
    print("| beta | validation MRR | validation HR@10 | test MRR | test HR@10 |")
    print("|---:|---:|---:|---:|---:|")
    for beta in BETAS:
        fn = prior_scorer(emb, prior, tau, beta)
        ranks[beta] = {split: evaluate_scorer(fn, *run.pairs(split)) for split in ("valid", "test")}
        v, t = (metrics_from_ranks(ranks[beta][s]) for s in ("valid", "test"))
        print(f"| {beta:g} | {v['mrr']:.4f} | {v['hr@10']:.4f} | {t['mrr']:.4f} | {t['hr@10']:.4f} |")
    chosen = max(BETAS, key=lambda b: float(np.mean(1.0 / ranks[b]["valid"])))  # first of equals: the smaller
    metrics = run.read_json(run.metrics)
    best = best_baseline({m: r["mrr"] for m, r in metrics["validation"]["methods"].items()})
    base = run.ranks_table("test")
    t = metrics_from_ranks(ranks[chosen]["test"])
    b = metrics_from_ranks(base[best].to_numpy())
    print(f"\nchosen on validation: beta {chosen:g}; test MRR {t['mrr']:.4f} against {best} {b['mrr']:.4f} "
          f"({t['mrr'] / b['mrr']:.2f}x), HR@10 {t['hr@10']:.4f} against {b['hr@10']:.4f}")
    for name, other in (("beta 0", ranks[0.0]["test"]), (best, base[best].to_numpy())):
        ci = paired_bootstrap([ranks[chosen]["test"]], [other])
        print(f"  vs {name}: delta MRR [{ci['mrr'][0]:+.4f}, {ci['mrr'][1]:+.4f}], "
              f"delta HR@10 [{ci['hr@10'][0]:+.4f}, {ci['hr@10'][1]:+.4f}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    for run in p.parse_args().runs:
        probe(RunDir(run))


if __name__ == "__main__":
    main()
