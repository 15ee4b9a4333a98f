"""PinSage convolution (paper Algorithm 1) with importance pooling.

The layer is split into the two halves the MapReduce export needs (paper Section 3.4):

    message:  m_v = ReLU(Q h_v + q)                       computed once per item (the "map")
    pool:     n_u = sum_v alpha_v m_v                       over u's T neighbours (the "join + reduce")
    combine:  z_u = ReLU(W [h_u ; n_u] + w),  z_u <- z_u / ||z_u||_2

Training runs exactly the same three functions over a sampled computation graph, so export and
training agree to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PinSageConv(nn.Module):
    """One PinSage convolution.

    Args:
        in_dim: size of the incoming representations h (D_in).
        message_dim: size of the neighbour messages m = ReLU(Q h + q) (the paper's hidden size).
        out_dim: size of the output z (D_out).
        aggregator: ``"importance"`` weighs neighbours by their normalised random-walk visit counts
            (the paper's importance pooling); ``"mean"`` averages the real neighbours (GraphSAGE mean
            pooling, the paper's ablation baseline).
    """

    def __init__(self, in_dim: int, message_dim: int, out_dim: int, aggregator: str = "importance"):
        super().__init__()
        if aggregator not in ("importance", "mean"):
            raise ValueError(f"aggregator must be 'importance' or 'mean', got {aggregator!r}")
        self.aggregator = aggregator
        self.message_dim = message_dim
        self.Q = nn.Linear(in_dim, message_dim)
        self.W = nn.Linear(in_dim + message_dim, out_dim)

    def message(self, h: torch.Tensor) -> torch.Tensor:
        """m = ReLU(Q h + q).  (N, D_in) -> (N, message_dim)"""
        return F.relu(self.Q(h))

    def pool_weights(self, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """alpha: (B, T) importance weights, or uniform over the real neighbours for mean pooling."""
        if self.aggregator == "importance":
            return weights * mask
        mask = mask.to(weights.dtype)
        return mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)

    def pool(self, messages: torch.Tensor, neighbors: torch.Tensor, weights: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """n_u = sum_v alpha_v m_v.

        Args:
            messages: (N_src, M) messages of every source node.
            neighbors: (B, T) int64 rows into ``messages``.
            weights: (B, T) importance weights (rows sum to 1 over real neighbours).
            mask: (B, T) bool, True where the neighbour is real.
        Returns:
            (B, M) pooled neighbourhood vectors; zero for items without neighbours.
        """
        alpha = self.pool_weights(weights, mask)  # (B, T)
        # A weighted embedding-bag is the fused gather + weighted sum: it never materialises the
        # (B, T, M) tensor, and its backward scatters without a generic index_put (~25x faster on CPU).
        return F.embedding_bag(neighbors, messages, per_sample_weights=alpha.to(messages.dtype),
                               mode="sum")  # (B, M)

    def combine(self, h_self: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """z = normalize(ReLU(W [h ; n] + w)).  (B, D_in), (B, M) -> (B, D_out)"""
        z = self.W(torch.cat([h_self, pooled], dim=1))  # (B, D_in + M) -> (B, D_out)
        return F.normalize(F.relu(z), dim=1)

    def forward(self, h_src: torch.Tensor, n_dst: int, neighbors: torch.Tensor, weights: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Convolve the first ``n_dst`` source nodes (destinations are a prefix of the sources).

        Args:
            h_src: (N_src, D_in) representations of every node the destinations need.
            n_dst: number of destination nodes; ``h_src[:n_dst]`` are their own representations.
            neighbors, weights, mask: (n_dst, T) neighbour rows into ``h_src``.
        Returns:
            (n_dst, D_out)
        """
        messages = self.message(h_src)  # (N_src, M)
        pooled = self.pool(messages, neighbors, weights, mask)  # (n_dst, M)
        return self.combine(h_src[:n_dst], pooled)
