"""The GPU paths against the CPU (issue 32): bf16 training steps, the export and VGG16 fc6 on CUDA.

Marked ``cuda``: ``python -m pytest -q -m cuda`` runs them (``bench/gpu_check.sh`` does, first). Without
a CUDA device every test here is skipped, with that reason. Each test's body is a function of the
device, so the same checks can be dry-run on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.synthetic import synthetic_features, synthetic_graph
from pinsage.export.embed import export_embeddings
from pinsage.features.vgg import VGG16, preprocess_batch
from pinsage.graph.walks import WalkConfig, random_walk_neighbors
from pinsage.model.network import ModelConfig, build_model
from pinsage.model.sampler import SamplerConfig, positive_pairs
from pinsage.model.train import TrainConfig, TrainData, train_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device: torch.cuda.is_available() is False (these tests need an NVIDIA GPU; "
                              f"torch {torch.__version__}, CUDA build {torch.version.cuda})"),
]


def _catalogue(n_items: int, top_t: int = 10, feature_dim: int = 16):
    """A seeded power-law catalogue: (graph, features, neighbourhoods)."""
    graph = synthetic_graph(n_items, n_items // 2, 20 * n_items, seed=0)
    features = synthetic_features(graph.n_items, feature_dim, seed=0)
    neighbors, _ = random_walk_neighbors(graph, WalkConfig(top_t=top_t, seed=0))
    return graph, features, neighbors


def train_steps_on(device: str) -> None:
    """A few bf16-autocast training steps through ``train_model`` (producer process, pinned loader on a
    GPU): the loss is finite, the weights sit on ``device`` in fp32 while training, the matmuls ran
    in bf16, and the trained layers moved."""
    graph, features, neighbors = _catalogue(400)
    contexts = np.repeat(np.arange(graph.n_contexts), np.diff(graph.context_indptr))
    pairs = positive_pairs(contexts, graph.context_items.astype(np.int64), 3, False, np.random.default_rng(0))
    pairs = pairs[:4 * 64]  # 4 steps
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=64, output_dim=32, n_layers=2), features)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    matmul_dtypes: set = set()
    model.convs[0].Q.register_forward_hook(lambda module, inputs, output: matmul_dtypes.add(output.dtype))
    seen: dict = {}

    def evaluate(m) -> float:  # called after the epoch, the model still where it trained
        seen["devices"] = {p.device.type for p in m.parameters()}
        seen["dtypes"] = {p.dtype for p in m.parameters()}
        return 0.0

    cfg = TrainConfig(epochs=1, patience=0, device=device, precision="bf16", warmup_steps=1, seed=0,
                      sampler=SamplerConfig(batch_size=64, n_shared_negatives=20, hard_negatives=False))
    data = TrainData(lambda epoch: pairs, features, neighbors, None, np.flatnonzero(graph.item_degree() > 0))
    model, state = train_model(model, data, cfg, evaluate_fn=evaluate, log=lambda s: None)
    assert np.isfinite(state.history[0]["loss"]) and state.step == 4
    assert seen["devices"] == {torch.device(device).type} and seen["dtypes"] == {torch.float32}
    assert matmul_dtypes == {torch.bfloat16}
    trained = dict(model.named_parameters())
    for key in ("project.weight", "convs.0.Q.weight", "convs.1.W.weight", "G1.weight", "G2.weight",
                "id_embedding.weight"):
        assert (trained[key].detach().cpu() - start[key]).abs().max() > 0, key


def export_agrees_on(device: str) -> None:
    """``export_embeddings`` with the model on ``device`` equals the CPU export to 1e-4."""
    _, features, neighbors = _catalogue(2000)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=64, output_dim=32, n_layers=2), features).eval()
    with torch.no_grad():  # non-zero id vectors, so the table's lookup is compared too
        model.id_embedding.weight.normal_(0, 0.1)
    cpu = export_embeddings(model, features, neighbors, chunk_size=512)
    model.to(device)
    moved = export_embeddings(model, features, neighbors, chunk_size=512)
    assert next(model.parameters()).device.type == torch.device(device).type  # exported where it is
    assert moved.shape == cpu.shape == (2000, 32) and moved.dtype == np.float32
    np.testing.assert_allclose(moved, cpu, atol=1e-4)


def vgg_agrees_on(device: str) -> None:
    """VGG16 fc6 (full size, RANDOM weights in torchvision's layout and initialisation; nothing is
    downloaded) of one random image on ``device`` equals the CPU's, to the rounding of TF32 convolutions."""
    torch.manual_seed(0)
    model = VGG16().eval()
    for m in model.modules():  # torchvision's initialisation: activations keep their scale through 13 convs
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.01)
            torch.nn.init.zeros_(m.bias)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    with torch.inference_mode():
        model = model.to(memory_format=torch.channels_last)
        cpu = model.embed(preprocess_batch(pixels, torch.device("cpu")), "fc6").numpy()
        model = model.to(device)
        moved = model.embed(preprocess_batch(pixels, torch.device(device)), "fc6").float().cpu().numpy()
    assert cpu.shape == moved.shape == (1, 4096)
    scale = float(np.abs(cpu).max())
    assert scale > 0 and (cpu > 0).mean() > 0.05  # a live activation, not all-zero ReLUs
    assert float(np.abs(moved - cpu).max()) <= 2e-2 * scale
    assert float(np.linalg.norm(moved - cpu) / np.linalg.norm(cpu)) <= 1e-2


def test_bf16_training_steps_on_the_gpu():
    train_steps_on("cuda")


def test_export_on_the_gpu_agrees_with_the_cpu():
    export_agrees_on("cuda")


def test_vgg16_fc6_on_the_gpu_agrees_with_the_cpu():
    vgg_agrees_on("cuda")
