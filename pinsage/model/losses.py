"""The training losses over one minibatch's embeddings: the paper's max-margin and a sampled softmax.

Both see the same negatives (shared by the minibatch, plus each query's curriculum hard negatives)
and the same masks (a negative that happens to be the query's positive drops out).
"""

from __future__ import annotations

import torch


def max_margin_loss(z_query: torch.Tensor, z_positive: torch.Tensor, z_negative: torch.Tensor,
                    margin: float, z_hard: torch.Tensor | None = None,
                    negative_mask: torch.Tensor | None = None,
                    hard_mask: torch.Tensor | None = None,
                    positive_bias: torch.Tensor | None = None,
                    negative_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Paper eq. (1): J(q, i) = E_{n ~ P_n(q)} max(0, z_q.z_n - z_q.z_i + Delta), averaged.

    Args:
        z_query, z_positive: (B, D) embeddings of each query and its positive item.
        z_negative: (N, D) negatives shared by the whole minibatch.
        z_hard: (B, H) per-query hard negatives as (B, H, D), or None.
        negative_mask: (B, N) bool, False where a shared negative happens to be the query's positive.
        hard_mask: (B, H) bool, likewise for hard negatives.
        positive_bias, negative_bias: (B,) and (N,) added to those items' scores (the cold twins'
            learned offset, ``PinSage.cold_bias``), or None.
    Returns:
        scalar loss: the mean hinge over every (query, negative) term that counts.
    """
    positive = (z_query * z_positive).sum(dim=1, keepdim=True)  # (B, 1)
    if positive_bias is not None:
        positive = positive + positive_bias[:, None]  # (B, 1)
    negative = z_query @ z_negative.T  # (B, N)
    if negative_bias is not None:
        negative = negative + negative_bias[None, :]
    hinge = torch.relu(negative - positive + margin)  # (B, N)
    mask = torch.ones_like(hinge, dtype=torch.bool) if negative_mask is None else negative_mask
    terms, counts = (hinge * mask).sum(), mask.sum()
    if z_hard is not None and z_hard.shape[1] > 0:
        hard_hinge = torch.relu(torch.einsum("bd,bhd->bh", z_query, z_hard) - positive + margin)  # (B, H)
        hmask = torch.ones_like(hard_hinge, dtype=torch.bool) if hard_mask is None else hard_mask
        terms, counts = terms + (hard_hinge * hmask).sum(), counts + hmask.sum()
    return terms / counts.clamp(min=1)


def sampled_softmax_loss(z_query: torch.Tensor, z_positive: torch.Tensor, z_negative: torch.Tensor,
                         temperature: float, z_hard: torch.Tensor | None = None,
                         negative_mask: torch.Tensor | None = None,
                         hard_mask: torch.Tensor | None = None,
                         positive_bias: torch.Tensor | None = None,
                         negative_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the positive against the same negatives as :func:`max_margin_loss`.

    loss(q, i) = -log( exp(z_q.z_i / tau) / (exp(z_q.z_i / tau) + sum_n exp(z_q.z_n / tau)) )

    Every negative pushes with a weight that grows with its score (a soft version of hard-negative
    mining), where the hinge gives zero gradient to every negative already beyond the margin.
    Arguments and masks as for :func:`max_margin_loss`; masked negatives drop out of the sum.
    """
    positive = (z_query * z_positive).sum(dim=1, keepdim=True)  # (B, 1)
    negative = z_query @ z_negative.T  # (B, N)
    if positive_bias is not None:
        positive = positive + positive_bias[:, None]
    if negative_bias is not None:
        negative = negative + negative_bias[None, :]
    logits = [positive, negative]  # (B, 1), (B, N)
    masks = [torch.ones_like(positive, dtype=torch.bool),
             torch.ones_like(logits[1], dtype=torch.bool) if negative_mask is None else negative_mask]
    if z_hard is not None and z_hard.shape[1] > 0:
        logits.append(torch.einsum("bd,bhd->bh", z_query, z_hard))  # (B, H)
        masks.append(torch.ones_like(logits[-1], dtype=torch.bool) if hard_mask is None else hard_mask)
    scores = torch.cat(logits, dim=1) / temperature  # (B, 1 + N + H), column 0 is the positive
    scores = scores.masked_fill(~torch.cat(masks, dim=1), float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long,
                                                                 device=scores.device))
