"""Statistics of evaluation ranks: paired bootstrap intervals, seed aggregates, slices by target degree.

Every comparison the project reports carries a paired bootstrap interval (docs/evaluation.md): both
methods' ranks of the same pairs are resampled together, so the interval is of their difference.
"""

from __future__ import annotations

import numpy as np

SPARSE_DEGREE = 5  # "sparse targets": at most this many training interactions (the quality bar's slice)
DEGREE_BUCKETS = ((0, 0), (1, 5), (6, 20), (21, None))  # training interactions of the target item

def paired_bootstrap(ranks_a: list[np.ndarray], ranks_b: list[np.ndarray], draws: int = 1000,
                     seed: int = 0) -> dict[str, list[float]]:
    """95% interval of mean(metric_a - metric_b) over evaluation pairs, resampled with replacement.

    Args:
        ranks_a, ranks_b: per seed, (P_s,) ranks of the same pairs under methods a and b. Pairs are
            resampled jointly for a and b (paired); seeds with the same pairs share the draw.
    Returns:
        {"mrr": [lo, hi], "hr@10": [lo, hi]} of the difference a - b, averaged over seeds.
    """
    rng = np.random.default_rng(seed)
    diffs = {"mrr": [1.0 / a - 1.0 / b for a, b in zip(ranks_a, ranks_b)],
             "hr@10": [(a <= 10).astype(float) - (b <= 10).astype(float) for a, b in zip(ranks_a, ranks_b)]}
    sizes = [len(a) for a in ranks_a]
    same_pairs = len(set(sizes)) == 1
    out = {}
    for metric, per_seed in diffs.items():
        stats = np.empty(draws)
        for d in range(draws):
            shared = rng.integers(0, sizes[0], sizes[0]) if same_pairs else None
            stats[d] = np.mean([x[shared if same_pairs else rng.integers(0, len(x), len(x))].mean()
                                for x in per_seed])
        out[metric] = [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]
    return out


def aggregate(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """[{method: {metric: value}}] over seeds -> {method: {metric: [mean, std]}} (std with ddof=0).

    Methods missing from some seed (e.g. visual without images) are aggregated over the seeds that have them.
    """
    methods = sorted({m for run in per_seed for m in run})
    result = {}
    for m in methods:
        runs = [run[m] for run in per_seed if m in run]
        result[m] = {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))]
                     for k in runs[0]}
    return result


def by_target_degree(ranks: dict[str, list[np.ndarray]], degree: list[np.ndarray]) -> dict:
    """MRR per bucket of the target's training degree, mean over seeds: where each method wins.

    Args:
        ranks: method -> per seed (P,) test ranks; degree: per seed (P,) training degree of the targets.
    Returns:
        {"buckets": {label: mean #pairs}, "mrr": {method: {label: mean MRR or None if empty}}}
    """
    labels, masks = [], []
    for lo, hi in DEGREE_BUCKETS:
        labels.append(f"{lo}" if hi == lo else (f">{lo - 1}" if hi is None else f"{lo}-{hi}"))
        masks.append([(d >= lo) & (d <= (np.inf if hi is None else hi)) for d in degree])
    out = {"buckets": {lab: float(np.mean([m.sum() for m in ms])) for lab, ms in zip(labels, masks)}, "mrr": {}}
    for method, per_seed in ranks.items():
        out["mrr"][method] = {lab: (float(np.mean([np.mean(1.0 / r[m]) for r, m in zip(per_seed, ms)]))
                                    if all(m.any() for m in ms) else None)
                              for lab, ms in zip(labels, masks)}
    return out
