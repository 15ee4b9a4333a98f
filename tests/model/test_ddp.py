"""Data-parallel training (torchrun + DDP, gloo on CPU) against the single-process path.

Each process takes its share of every global minibatch and DDP averages the share-weighted
gradients, so two processes must train the same model as one (up to float summation order).
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import make_community_dataset
from test_pipeline import small_config

from pinsage import pipeline
from pinsage.graph.neighbors import Neighbors
from pinsage.model.network import build_model
from pinsage.model.sampler import MinibatchProducer, SamplerConfig
from pinsage.run.layout import RunDir


def _prepared(tmp_path, name, data, nproc):
    cfg = small_config(data, tmp_path / name, epochs=2)
    # a 100-pair last batch: shares of 50 per process, exercising the share weighting
    cfg.train.sampler = dataclasses.replace(cfg.train.sampler, batch_size=128)
    cfg.train.nproc = nproc
    for stage in ("prepare", "graph", "features", "neighbors"):
        pipeline.STAGES[stage](cfg, log=lambda s: None)
    return cfg


@pytest.mark.slow
def test_two_process_ddp_trains_the_same_model_as_one_process(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=60, n_contexts=120)
    single = _prepared(tmp_path, "single", data, nproc=1)
    pipeline.train(single, log=lambda s: None)
    ddp = _prepared(tmp_path, "ddp", data, nproc=2)
    logs = []
    pipeline.train(ddp, log=logs.append)
    assert any("data-parallel training on 2 processes" in line for line in logs)

    hist_1 = json.loads((tmp_path / "single" / "train" / "history.json").read_text())
    hist_2 = json.loads((tmp_path / "ddp" / "train" / "history.json").read_text())
    assert [e["processes"] for e in hist_2["epochs"]] == [2, 2]
    assert [e["loss"] for e in hist_2["epochs"]] == pytest.approx([e["loss"] for e in hist_1["epochs"]], rel=1e-4)
    a = torch.load(tmp_path / "single" / "train" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "train" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
    # a trained model, not two untouched initialisations: every tensor moved from the seed's start
    torch.manual_seed(single.train.seed)
    initial = build_model(single.model, pipeline._load_inputs(RunDir(single.out))[0])
    start = dict(initial.named_parameters())  # the buffers (feature scaling) are not trained
    assert start.keys() <= a.keys() and len(start) > 5
    assert all((a[key] - start[key].detach()).abs().max() > 1e-3 for key in start), \
        [key for key in start if (a[key] - start[key].detach()).abs().max() <= 1e-3]
    assert [e["validation_score"] for e in hist_2["epochs"]] == pytest.approx(
        [e["validation_score"] for e in hist_1["epochs"]], abs=1e-6)
    # the same prior weight chosen; its MRR on 120 pairs may differ by one rank flip (1e-4 weights)
    assert hist_2["prior"]["chosen"] == hist_1["prior"]["chosen"]
    assert hist_2["best_validation_mrr"] == pytest.approx(hist_1["best_validation_mrr"], abs=1e-3)


def test_processes_split_every_minibatch_into_disjoint_shares():
    rng = np.random.default_rng(0)
    n = 40
    features = rng.normal(size=(n, 4)).astype(np.float32)
    nbrs = Neighbors(items=rng.integers(0, n, size=(n, 3)).astype(np.int32),
                     weights=np.full((n, 3), 1 / 3, dtype=np.float32), mask=np.ones((n, 3), dtype=bool))
    pairs = rng.integers(0, n, size=(50, 2)).astype(np.int64)
    cfg = SamplerConfig(batch_size=16, n_shared_negatives=5, hard_negatives=False)
    args = (pairs, features, nbrs, None, cfg, 0, 7, np.arange(n), 1)
    whole = list(MinibatchProducer(*args))
    parts = [list(MinibatchProducer(*args, rank=r, world_size=3)) for r in range(3)]
    assert all(len(p) == len(whole) for p in parts)  # every process steps through every batch
    for b, batch in enumerate(whole):
        shares = [p[b] for p in parts]
        queries = np.concatenate([s.positive_item.numpy() for s in shares])
        assert np.array_equal(queries, batch.positive_item.numpy())  # disjoint and complete, in order
        assert sum(s.share for s in shares) == pytest.approx(1.0)
        for s in shares:  # the shared negatives are the same draw in every process
            assert np.array_equal(s.negative_item.numpy(), batch.negative_item.numpy())
    with pytest.raises(ValueError, match="rank"):
        MinibatchProducer(*args, rank=3, world_size=3)


def test_bf16_autocast_trains_with_fp32_weights(tmp_path):
    data = make_community_dataset(tmp_path / "data", n_items=60, n_contexts=120)
    cfg = _prepared(tmp_path, "bf16", data, nproc=1)
    cfg.train.precision = "bf16"
    pipeline.train(cfg, log=lambda s: None)
    hist = json.loads((tmp_path / "bf16" / "train" / "history.json").read_text())
    assert all(np.isfinite(e["loss"]) for e in hist["epochs"]) and hist["best_validation_mrr"] > 0
    state = torch.load(tmp_path / "bf16" / "train" / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    # the flag took effect: the same run in fp32 gives other losses (bf16 rounds every matmul)
    cfg.train.precision = "fp32"
    cfg.out = str(tmp_path / "fp32")
    for stage in ("prepare", "graph", "features", "neighbors", "train"):
        pipeline.STAGES[stage](cfg, log=lambda s: None)
    fp32 = json.loads((tmp_path / "fp32" / "train" / "history.json").read_text())
    bf16_loss, fp32_loss = hist["epochs"][0]["loss"], fp32["epochs"][0]["loss"]
    assert bf16_loss != fp32_loss and abs(bf16_loss - fp32_loss) < 0.05 * fp32_loss  # rounding, not a bug
    cfg.train.precision = "fp16"
    with pytest.raises(ValueError, match="precision"):
        pipeline.train(cfg, log=lambda s: None)
