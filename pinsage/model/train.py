"""Training: sampled-softmax or max-margin loss, producer-consumer minibatches, warm-up + decay,
resumable checkpoints, data-parallel over processes (DDP) and bf16 autocast."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pinsage.graph.neighbors import Neighbors, VisitTable
from pinsage.model import distributed
from pinsage.model.coldtwins import ColdTwins
from pinsage.model.distributed import SINGLE_PROCESS, ProcessGroup
from pinsage.model.losses import max_margin_loss, sampled_softmax_loss
from pinsage.model.network import PinSage
from pinsage.model.sampler import MinibatchProducer, SamplerConfig, collate_identity, full_pass_pays, reachable_items
from pinsage.util.io import atomic_path
from pinsage.util.progress import track
from pinsage.util.resources import resolve_device


@dataclass
class TrainConfig:
    # The pair budget: at most this many epochs. Training stops earlier by ``patience``; the budget
    # scales with the catalogue because an epoch does (``epoch_pairs``). 40 epochs of the default
    # decay leave 0.8^40 < 1e-3 of the peak rate: past it nothing more is learned.
    epochs: int = 40
    # Stop when validation MRR has not gained ``min_gain`` (relative) over the best for this many
    # evaluations (one per epoch). The paper trains "until convergence"; this is that rule, stated.
    patience: int = 3
    min_gain: float = 0.01  # below 1% of the best, a gain is within the noise of a few thousand pairs
    # An epoch draws at most max(MIN_EPOCH_PAIRS, this x catalogue size) of the positive pairs (a fresh
    # random subset each epoch; 0: all). Its cost then grows with the catalogue, not with the number
    # of interactions: once a minibatch's 2-hop graph covers the catalogue, every step costs the same.
    epoch_pairs_per_item: int = 10
    learning_rate: float = 3e-3  # peak rate after warm-up (Adam)
    warmup_steps: int = 100  # linear warm-up, as the paper's large-batch recipe
    decay_per_epoch: float = 0.8  # exponential decay of the rate after warm-up
    weight_decay: float = 0.0
    loss: str = "softmax"  # "softmax": sampled softmax over the same negatives; "max_margin": paper eq. (1)
    margin: float = 0.3  # Delta of the max-margin loss on cosine scores
    # softmax over cosines / tau; 0.05 spreads [-1, 1] cosines over 40 logits, sharp enough to separate
    # the crowded top of a query's list (0.1 measured worse on validation: docs/figures.md)
    temperature: float = 0.05
    # Minibatch producer processes; 0 samples in the training process; -1 (auto): 0 on the CPU, 1 on a
    # GPU (``producer_processes``).
    num_workers: int = -1
    device: str = "auto"  # auto | cpu | cuda
    nproc: int = 1  # data-parallel processes (one per GPU) via torchrun + DDP; 1: this process only
    precision: str = "fp32"  # "bf16": autocast matmuls to bfloat16 (GPU speed; weights and Adam stay fp32)
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


MIN_EPOCH_PAIRS = 100_000  # floor of an epoch's pairs: a small catalogue still sees ~200 steps an epoch


def epoch_pairs(n_pairs: int, n_items: int, config: TrainConfig) -> int:
    """How many of ``n_pairs`` positive pairs one epoch trains on (``TrainConfig.epoch_pairs_per_item``)."""
    if config.epoch_pairs_per_item <= 0:
        return n_pairs
    return min(n_pairs, max(MIN_EPOCH_PAIRS, config.epoch_pairs_per_item * n_items))


def learning_rate_at(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Linear warm-up to the peak rate, then exponential decay per epoch (paper Section 3.3)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    epochs_after = (step - config.warmup_steps) / max(1, steps_per_epoch)
    return config.learning_rate * config.decay_per_epoch ** epochs_after


@dataclass
class TrainState:
    epoch: int  # epochs completed
    step: int
    best_score: float
    best_epoch: int
    history: list  # one dict per completed epoch
    gain_epoch: int = 0  # the last epoch that gained at least ``min_gain`` over the best before it
    stopped: dict = field(default_factory=dict)  # why training ended: {"reason", "epoch", "detail"}


def stop_reason(state: TrainState, config: TrainConfig) -> dict | None:
    """Why training ends after ``state.epoch`` epochs, or None to go on: ``patience`` when the last
    ``config.patience`` evaluations gained less than ``min_gain`` over the best, ``budget`` when the
    epoch budget is spent first."""
    if config.patience > 0 and state.epoch - state.gain_epoch >= config.patience:
        return {"reason": "patience", "epoch": state.epoch,
                "detail": f"no validation gain of {config.min_gain:.0%} over the best for {config.patience} "
                          f"epochs after epoch {state.gain_epoch}"}
    if state.epoch >= config.epochs:
        return {"reason": "budget", "epoch": state.epoch,
                "detail": f"the epoch budget ({config.epochs}) was spent; validation last gained at epoch "
                          f"{state.gain_epoch}"}
    return None


def save_checkpoint(path: Path, model: PinSage, optimizer, state: TrainState, best_state: dict) -> None:
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "best_model": best_state, "epoch": state.epoch, "step": state.step,
               "best_score": state.best_score, "best_epoch": state.best_epoch, "gain_epoch": state.gain_epoch,
               "history_json": json.dumps(state.history)}
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, model: PinSage, optimizer) -> tuple[TrainState, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    state = TrainState(int(payload["epoch"]), int(payload["step"]), float(payload["best_score"]),
                       int(payload["best_epoch"]), json.loads(payload["history_json"]),
                       int(payload.get("gain_epoch", payload["best_epoch"])))
    return state, payload["best_model"]


@dataclass
class TrainData:
    """What training reads besides the model and its config.

    ``pairs_for_epoch``: epoch -> (P, 2) positive pairs (query, positive) for that epoch;
    ``features``: (N, F) float32 raw features of the whole catalogue; ``neighbors``/``visits``: the
    importance-neighbour table and the deeper visit ranks (hard negatives); ``candidate_items``:
    catalogue indices negatives are drawn from (uniformly); ``cold``: the items' cold twins
    (``SamplerConfig.cold_share``; None trains without them).
    """

    pairs_for_epoch: Callable[[int], np.ndarray]
    features: np.ndarray
    neighbors: Neighbors
    visits: VisitTable | None
    candidate_items: np.ndarray
    cold: ColdTwins | None = None


def train_model(model: PinSage, data: TrainData, config: TrainConfig, *,
                checkpoint_dir: str | Path | None = None,
                evaluate_fn: Callable[[PinSage], float] | None = None,
                on_epoch_end: Callable[[dict], None] | None = None,
                log: Callable[[str], None] = print,
                group: ProcessGroup = SINGLE_PROCESS) -> tuple[PinSage, TrainState]:
    """Train ``model`` in place and return it with the best validation epoch's weights loaded.

    Args:
        data: the epoch's pairs, features, neighbourhoods and negative candidates (:class:`TrainData`).
        checkpoint_dir: ``last.pt`` is written there after every epoch; if present, training resumes.
        evaluate_fn: model -> validation score (higher is better) after each epoch; the best epoch wins.
        on_epoch_end: receives each epoch's record (loss, score, seconds, learning rate).
        group: this process's place in data-parallel training (joined here); process 0 evaluates
            and checkpoints, the others follow its validation score.
    """
    device = distributed.start(group, resolve_device(config.device))
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        # Without this, the scatter-adds in the backward pass of repeated-index gathers run in a
        # thread-dependent order on CPU, and 1-ulp differences grow into different models.
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(model, data, config, checkpoint_dir, evaluate_fn, on_epoch_end, log, device, group)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        distributed.stop(group)


def producer_processes(config: TrainConfig, device: torch.device) -> int:
    """Minibatch producer processes: ``num_workers`` when set (>= 0), else none on the CPU and one on a GPU.

    On the CPU, tracing a batch is 1-9% of a step (``bench/bench_train_step.py``) and a producer
    process takes a core from torch's threads: ml-latest-small on 2 cores trains the same model in
    94.5 s inline and in 120.6 s with one producer. A GPU would wait for the CPU's trace, so there
    one producer builds the next batches while the GPU runs.
    """
    if config.num_workers < -1:
        raise ValueError(f"TrainConfig.num_workers must be >= 0, or -1 (auto), got {config.num_workers}")
    if config.num_workers >= 0:
        return config.num_workers
    return 0 if device.type == "cpu" else 1


def _loss(config: TrainConfig) -> tuple[Callable, float]:
    """The configured loss and its scale argument (temperature or margin), validated."""
    if config.loss not in ("softmax", "max_margin"):
        raise ValueError(f"TrainConfig.loss must be 'softmax' or 'max_margin', got {config.loss!r}")
    if config.temperature <= 0:
        raise ValueError(f"TrainConfig.temperature must be > 0, got {config.temperature}")
    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"TrainConfig.precision must be 'fp32' or 'bf16', got {config.precision!r}")
    return (sampled_softmax_loss, config.temperature) if config.loss == "softmax" else (max_margin_loss, config.margin)


def choose_graphs(data: TrainData, n_layers: int, sampler: SamplerConfig,
                  log: Callable[[str], None]) -> np.ndarray | None:
    """Full-catalogue computation graphs (-> the reachable items they compute) or sampled ones (-> None),
    by :func:`full_pass_pays` on the first epoch's first batch, so a resumed run decides the same."""
    pairs = data.pairs_for_epoch(0)
    if len(pairs) == 0 or n_layers == 0:
        return None
    reachable = reachable_items(data.neighbors, data.candidate_items)
    probe = MinibatchProducer(pairs, data.features, data.neighbors, None, sampler, 0, 0, data.candidate_items,
                              n_layers)
    sampled = len(probe.make_batch(0).item_index)
    full = full_pass_pays(sampled, len(reachable))
    log(f"{'full-catalogue' if full else 'sampled'} computation graphs (a sampled batch reaches {sampled} "
        f"of the {len(reachable)} items any batch can reach)")
    return reachable if full else None


def _train(model, data: TrainData, config: TrainConfig, checkpoint_dir, evaluate_fn, on_epoch_end, log,
           device, group) -> tuple[PinSage, TrainState]:
    loss_fn, scale = _loss(config)  # validated before any work
    torch.manual_seed(config.seed)
    model.to(device)
    net = distributed.wrap(model, group, device)  # DDP averages gradients; ``model`` keeps the weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    state = TrainState(0, 0, -math.inf, -1, [])
    best_state = copy.deepcopy(model.state_dict())
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state, best_state = load_checkpoint(ckpt, model, optimizer)
        log(f"resumed from {ckpt} after epoch {state.epoch}")
    full = choose_graphs(data, model.config.n_layers, config.sampler, log)
    workers = producer_processes(config, device)
    while (stopped := stop_reason(state, config)) is None:
        epoch = state.epoch
        t0 = time.perf_counter()
        pairs = data.pairs_for_epoch(epoch)
        producer = MinibatchProducer(pairs, data.features, data.neighbors, data.visits, config.sampler, epoch,
                                     config.seed, data.candidate_items, model.config.n_layers,
                                     rank=group.rank, world_size=group.world_size, full=full, cold=data.cold)
        loader = torch.utils.data.DataLoader(
            producer, batch_size=None, collate_fn=collate_identity, num_workers=workers,
            pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
            persistent_workers=False)
        model.train()
        total, n_batches = torch.zeros((), device=device), 0  # summed on the device: no per-step sync
        steps_per_epoch = len(producer)
        for batch in track(loader, steps_per_epoch, f"train epoch {epoch + 1} (at most {config.epochs})", "batches",
                           enabled=None if group.is_main else False):  # one bar, not one per process
            lr = learning_rate_at(state.step, steps_per_epoch, config)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                z = net(batch.x, batch.item_index, batch.blocks)  # (N_targets, D)
            z = z.float()  # the loss in fp32: its logits are cosines / tau
            zq = z[batch.query]
            pos_item = batch.positive_item
            if len(zq) == 0:  # a last batch smaller than the process count leaves some shares empty
                loss = z.sum() * 0.0
            else:
                bias = model.cold_bias
                loss = loss_fn(
                    zq, z[batch.positive], z[batch.negative], scale,
                    z_hard=z[batch.hard],  # (B, H, D)
                    negative_mask=batch.negative_item[None, :] != pos_item[:, None],
                    hard_mask=batch.hard_item != pos_item[:, None],
                    positive_bias=None if bias is None else bias * batch.positive_cold,
                    negative_bias=None if bias is None else bias * batch.negative_cold)
            if group.distributed:
                # DDP averages over processes; weighting by each share makes that the global-batch mean.
                loss = loss * (batch.share * group.world_size)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            n_batches += 1
            state.step += 1
        model.eval()
        mean_loss = distributed.mean_over_processes(float(total) / max(1, n_batches), group, device)
        score = -mean_loss
        if evaluate_fn is not None and group.is_main:
            score = float(evaluate_fn(model))
        score = distributed.broadcast_float(score, group, device)  # every process picks the same best epoch
        record = {"epoch": epoch + 1, "loss": mean_loss, "validation_score": score,
                  "seconds": time.perf_counter() - t0, "learning_rate": lr if n_batches else 0.0,
                  "hard_negatives": producer.n_hard(), "examples": int(len(pairs)),
                  "processes": group.world_size, "full_graph": full is not None}
        if score > state.best_score:
            if state.best_score == -math.inf or score >= state.best_score + config.min_gain * abs(state.best_score):
                state.gain_epoch = epoch + 1
            state.best_score, state.best_epoch = score, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        state.epoch = epoch + 1
        state.history.append(record)
        if ckpt is not None and group.is_main:
            save_checkpoint(ckpt, model, optimizer, state, best_state)
        distributed.barrier(group)
        log(f"epoch {epoch + 1}/{config.epochs}  loss {record['loss']:.4f}  "
            f"val {score:.4f}  {record['seconds']:.1f}s")
        if on_epoch_end is not None:
            on_epoch_end(record)
    state.stopped = stopped
    log(f"stopped after epoch {state.epoch} ({stopped['reason']}): {stopped['detail']}; "
        f"kept epoch {state.best_epoch} (validation {state.best_score:.4f})")
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    return model, state
