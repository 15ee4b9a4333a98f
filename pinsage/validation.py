"""Training's choices made on the validation pairs: each epoch's score (which epoch is kept) and the
popularity prior's weight served with the kept model. Both rank the exported embeddings under full
ranking, so they live above the export; the test pairs never reach them."""

from __future__ import annotations

import numpy as np
import torch

from pinsage.eval.metrics import embedding_scorer, evaluate_offsets, evaluate_scorer, metrics_from_ranks
from pinsage.export.embed import export_embeddings
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import PinSage


def validation_mrr(model: PinSage, features: np.ndarray, neighbors: Neighbors, queries: np.ndarray,
                   targets: np.ndarray) -> float:
    """MRR of the exported embeddings on (query, target) pairs under full ranking: training's epoch
    score (the plain cosine: the popularity prior's weight is chosen after training)."""
    emb = export_embeddings(model, features, neighbors)
    return metrics_from_ranks(evaluate_scorer(embedding_scorer(emb), queries, targets))["mrr"]


# The prior's weight in units of the softmax temperature: beta = 1 is log(1 + d) added to cos / tau,
# the log-popularity a softmax over uniform negatives would learn; the grid reaches 3 (beyond it, every
# measured run lost) and includes 0, the plain cosine.
PRIOR_BETAS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@torch.no_grad()
def choose_prior_weight(model: PinSage, features: np.ndarray, neighbors: Neighbors, queries: np.ndarray,
                        targets: np.ndarray, degree: np.ndarray, temperature: float) -> dict:
    """Set the model's popularity-prior weight to the one validation MRR prefers, and say so.

    How much popularity the held-out pairs reward depends on the catalogue (later interactions
    favour newer, less-seen items; a long tail of one-listener items favours the head): the served
    weight is chosen on the validation pairs among ``tau * PRIOR_BETAS`` (ties: the smaller).
    Returns ``{"chosen", "validation_mrr": {weight: MRR}}`` (weights in score units).
    """
    if model.prior_weight is None:
        return {}
    emb = export_embeddings(model, features, neighbors)
    log_degree = np.log1p(np.asarray(degree, dtype=np.float64)).astype(np.float32)
    weights = [round(temperature * b, 6) for b in PRIOR_BETAS]
    ranks = evaluate_offsets(embedding_scorer(emb), queries, targets,
                             np.float32(weights)[:, None] * log_degree[None, :])  # (W, P)
    mrr = {w: float(np.mean(1.0 / r)) for w, r in zip(weights, ranks)}
    chosen = max(weights, key=lambda w: (mrr[w], -w))
    model.prior_weight.fill_(chosen)
    return {"chosen": chosen, "validation_mrr": {f"{w:g}": m for w, m in mrr.items()}}
