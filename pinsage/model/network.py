"""The PinSage model (paper Algorithm 2): input projection, K convolutions, final dense layers.

    h_u^0 = P standardize(x_u) + p  (+ e_u, a learnable id embedding; docs/paper_differences.md)
    for k = 1..K:  h_u^k = PinSageConv_k(h_u^{k-1}, {h_v^{k-1} : v in N(u)})
    z_u = G2 ReLU(G1 [h_u^K ; h_u^0] + g),  z_u <- z_u / ||z_u||_2
          (the paper's G1 h_u^K with ``input_skip=False``; with it the item's own input reaches the
          output directly, beside what its neighbourhood says)

Scores are dot products of the unit-length z, i.e. cosine similarities.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pinsage.model.layers import PinSageConv
from pinsage.util.io import atomic_path, write_text


@dataclass
class ModelConfig:
    input_dim: int = 0  # width of the concatenated item features; set from the feature table
    n_items: int = 0  # rows of the id-embedding table (catalogue size); 0 disables id embeddings
    hidden_dim: int = 256  # paper: 2048; 256 keeps a 10k-item catalogue well inside a CPU minute
    output_dim: int = 128  # paper: 1024; final embedding size
    n_layers: int = 2  # K, paper: 2 (K=0 is the no-convolution ablation)
    aggregator: str = "importance"  # paper's importance pooling; "mean" is the GraphSAGE ablation
    id_embedding: bool = True  # learnable per-item vector added to the projected features (not in the paper)
    # Final layers also see h^0 (jumping-knowledge concat; not in the paper): the convolution adds the
    # neighbourhood without washing out the item's own input. Chosen on validation (docs/figures.md).
    input_skip: bool = True
    # A popularity prior: score(q, i) = z_q . z_i + w log(1 + d_i), d_i the item's training
    # interactions; w chosen on validation after training (0: the plain cosine). Unit vectors cannot
    # say "popular"; every baseline can (docs/paper_differences.md).
    popularity_prior: bool = True
    # A learned score offset for items without training interactions (the cold twins in training,
    # new items when served): cold embeddings are vaguer, so their cosines run lower than a warm
    # item's; the offset is trained with twins as positives and negatives at the same rate, so it
    # calibrates rather than promotes. Set from SamplerConfig.cold_share (no twins: no offset).
    cold_bias: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        d = json.loads(text)
        d.setdefault("popularity_prior", False)  # written before the prior existed
        d.setdefault("cold_bias", False)  # written before the cold twins existed
        for key, default in REMOVED_MODEL_OPTIONS.items():  # a checkpoint written before the option went
            if key in d and d.pop(key) != default:
                raise ValueError(f"model config sets {key!r}, an option removed after measurement "
                                 "(docs/removed_options.md); retrain with this version")
        return cls(**d)


# Options measured not to help and deleted (docs/removed_options.md), with the value that equals
# today's model: older checkpoints that carry them at that value still load.
REMOVED_MODEL_OPTIONS = {"combine": "concat", "id_dropout": 0.0, "neighbor_dropout": 0.0}


class PinSage(nn.Module):
    def __init__(self, config: ModelConfig, feature_mean: np.ndarray | None = None,
                 feature_std: np.ndarray | None = None):
        super().__init__()
        if config.input_dim <= 0:
            raise ValueError("ModelConfig.input_dim must be set from the feature table")
        self.config = config
        d, h = config.input_dim, config.hidden_dim
        mean = torch.zeros(d) if feature_mean is None else torch.as_tensor(feature_mean, dtype=torch.float32)
        std = torch.ones(d) if feature_std is None else torch.as_tensor(feature_std, dtype=torch.float32)
        # Standardising inside the model keeps the checkpoint self-contained for export and serving.
        self.register_buffer("feature_mean", mean)
        self.register_buffer("feature_std", std.clamp(min=1e-6))
        self.project = nn.Linear(d, h)
        self.id_embedding = None
        if config.id_embedding and config.n_items > 0:
            # Zero-initialised: an item that never appears in training keeps a zero id vector, so its
            # embedding comes from its features and neighbours alone, the state the cold twins train
            # (SamplerConfig.cold_share).
            self.id_embedding = nn.Embedding(config.n_items, h)
            nn.init.zeros_(self.id_embedding.weight)
        self.convs = nn.ModuleList(
            PinSageConv(h, h, h, aggregator=config.aggregator) for _ in range(config.n_layers))
        # w in score units (cosine): a buffer, not a trained weight. Learned jointly it fits the training
        # pairs' popularity and lost on validation (docs/removed_options.md); the served w is chosen
        # on the validation pairs (``choose_prior_weight``) and saved with the model.
        self.register_buffer("prior_weight", torch.zeros(()) if config.popularity_prior else None)
        self.cold_bias = nn.Parameter(torch.zeros(())) if config.cold_bias else None  # score units
        self.G1 = nn.Linear(2 * h if config.input_skip else h, h)
        self.G2 = nn.Linear(h, config.output_dim)

    def embed_input(self, x: torch.Tensor, item_index: torch.Tensor) -> torch.Tensor:
        """h^0.  x: (N, input_dim) raw features, item_index: (N,) int64 catalogue rows, -1 for an item
        without an id vector (a cold twin in training) -> (N, hidden)."""
        h = self.project((x - self.feature_mean) / self.feature_std)  # (N, hidden)
        if self.id_embedding is not None:
            known = (item_index >= 0).unsqueeze(1).to(h.dtype)  # (N, 1)
            h = h + self.id_embedding(item_index.clamp(min=0)) * known  # (N, hidden)
        return h

    def finalize(self, h: torch.Tensor, h_input: torch.Tensor | None = None) -> torch.Tensor:
        """z = normalize(G2 ReLU(G1 h + g)), or G1 [h ; h^0] with ``input_skip``.

        (N, hidden)[, (N, hidden)] -> (N, output_dim)
        """
        if self.config.input_skip:
            h = torch.cat([h, h_input], dim=1)  # (N, 2 * hidden)
        return F.normalize(self.G2(F.relu(self.G1(h))), dim=1)

    def forward(self, x: torch.Tensor, item_index: torch.Tensor, blocks) -> torch.Tensor:
        """Embed the targets of a sampled computation graph.

        Args:
            x: (N_0, input_dim) features of every input node of the computation graph.
            item_index: (N_0,) their catalogue indices (for the id embeddings).
            blocks: K ``TensorBlock`` s from the input layer to the output; block k's destination
                nodes are the first ``n_dst`` of its sources.
        Returns:
            (N_K, output_dim) unit-length embeddings of the targets.
        """
        h0 = self.embed_input(x, item_index)  # (N_0, hidden)
        h = h0
        for conv, block in zip(self.convs, blocks):
            h = conv(h, block.n_dst, block.neighbors, block.weights, block.mask)  # (N_k, hidden)
        return self.finalize(h, h0[:len(h)])  # targets are the first N_K input nodes


def build_model(config: ModelConfig, features: np.ndarray) -> PinSage:
    """A fresh network for ``features`` (N, F): input width, id table and standardisation from them."""
    config = dataclasses.replace(config, input_dim=features.shape[1], n_items=len(features))
    return PinSage(config, feature_mean=features.mean(axis=0), feature_std=features.std(axis=0))


def save_model(model: PinSage, directory: str | Path) -> None:
    """state_dict (loadable with weights_only=True) + the JSON config beside it."""
    directory = Path(directory)
    write_text(directory / "model_config.json", model.config.to_json())
    with atomic_path(directory / "model.pt", ".pt") as tmp:
        torch.save(model.state_dict(), tmp)


def load_model(directory: str | Path, map_location: str = "cpu") -> PinSage:
    directory = Path(directory)
    config = ModelConfig.from_json((directory / "model_config.json").read_text())
    model = PinSage(config)
    model.load_state_dict(torch.load(directory / "model.pt", map_location=map_location, weights_only=True))
    model.eval()
    return model
