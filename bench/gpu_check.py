"""The prepared GPU check (issue 32): one run, one JSON file, every GPU figure the project lacks.

    bash bench/gpu_check.sh [--cpu-smoke] [--out FILE.json] [--only STEP ...] [--budget-s S]

Steps, in this order, each in its own process (a crash, a CUDA error or a hang costs that step only)
with its own time limit inside a total budget (default 470 s, for an 8-minute slot on one GPU):

- ``pytest_cuda``: ``python -m pytest -q -m cuda`` (the tests that need CUDA; they skip without it);
- ``train``: training at paper dimensions (hidden 2048, output 1024, T = 50, K = 2, minibatch 2048,
  500 shared negatives) on a seeded synthetic power-law graph of 10^6 items (20 edges per item,
  ``bench/synthetic.py``; 64-d features, neighbourhoods by the project's random walks). Minibatches come
  from ``MinibatchProducer``, the network from ``build_model``, the loss from ``sampled_softmax_loss``,
  as in ``pinsage/model/train.py``. Figures: the time of each part of a step, measured one after the
  other with the device synchronised between them (producer = the minibatch built on the CPU,
  host-to-device copy, forward + backward, the id-embedding table's Adam update, Adam on the other
  parameters), with bf16 autocast and, when time allows, in fp32; the same step without the id table
  (the paper's features-only model); and the real training loop (``train_model``: producer processes,
  overlapped with the GPU) as examples/s from the difference of a short and a long run, with the GPU's
  utilisation over the long one (``torch.cuda.utilization()``, else ``nvidia-smi``);
- ``vgg``: VGG16 fc6 images/s in fp32 and with bf16 autocast, full size, RANDOM weights in
  torchvision's layout (``pinsage.features.vgg.VGG16``; nothing is downloaded), on synthetic 224x224
  images, timed by ``bench/bench_vgg.py``'s ``time_forward``;
- ``export``: ``export_embeddings`` items/s on the GPU over the same catalogue, at paper dimensions;
- ``ddp``: ``train_model`` under ``torchrun`` with one process per GPU (NCCL): the project's
  data-parallel path. With one GPU it is skipped, and says why.

Every figure is printed with the command that reproduces it (``--only STEP``), and goes to the JSON
file (default ``gpu_check.json`` in the working directory) with the machine's description and each
step's status: ``ok``, ``failed`` (with the error) or ``skipped`` (with the reason). The exit code is
1 when a step failed.

``--cpu-smoke`` runs the same steps on the CPU at tiny sizes (2,000 items, hidden 32, output 16, T = 5,
minibatch 64, 20 negatives, 3 steps; a narrow VGG16 on one image; DDP with gloo over 2 processes;
``pytest_cuda`` skipped), so the GPU run cannot fail for a typo, an import or a device mismatch. Its
figures are smoke-test figures, NOT performance figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import gc
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `pinsage` / `bench` importable
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

STEPS = ("pytest_cuda", "train", "vgg", "export", "ddp")
GPU_GOAL = 15_000  # training examples/s on one H200 at paper dimensions (docs/scaling.md)
SMOKE_NOTE = ("--cpu-smoke: tiny sizes on the CPU, to exercise the code paths; these are smoke-test "
              "figures, not performance figures")
# per step: (most seconds it may take, fewest seconds worth starting it with), GPU run and smoke run
LIMITS = {"pytest_cuda": (120, 20), "train": (240, 60), "vgg": (60, 15), "export": (120, 20), "ddp": (120, 20)}
SMOKE_LIMITS = {"pytest_cuda": (60, 5), "train": (90, 10), "vgg": (60, 5), "export": (60, 5), "ddp": (90, 10)}


# --------------------------------------------------------------------------------------------------
# sizes
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    items: int  # catalogue; contexts = items / 2, edges = 20 per item (bench/bench_stages_scale.py)
    feature_dim: int
    hidden: int
    output: int
    top_t: int
    layers: int
    batch: int
    negatives: int
    steps: int  # timed steps of the phase breakdown (after one warm-up step)
    e2e_steps: tuple  # (short, long) runs of train_model: examples/s from their difference
    producers: int  # minibatch producer processes of the end-to-end runs
    fp32: bool  # also time the step in fp32
    vgg_channels: tuple
    vgg_fc: int
    vgg_batch: int
    vgg_repeats: int
    ddp_steps: int

    @property
    def contexts(self) -> int:
        return max(1, self.items // 2)

    @property
    def edges(self) -> int:
        return 20 * self.items


def sizes_from(a) -> Sizes:
    from bench.bench_stages_scale import FEATURE_DIM
    from pinsage.features.vgg import VGG16_CHANNELS, VGG16_FC
    from pinsage.util.resources import available_cpus

    if a.cpu_smoke:
        s = Sizes(items=2000, feature_dim=16, hidden=32, output=16, top_t=5, layers=2, batch=64, negatives=20,
                  steps=3, e2e_steps=(2, 4), producers=0, fp32=True, vgg_channels=(8, 16, 32, 64, 64),
                  vgg_fc=256, vgg_batch=1, vgg_repeats=1, ddp_steps=2)
    else:
        s = Sizes(items=1_000_000, feature_dim=FEATURE_DIM, hidden=2048, output=1024, top_t=50, layers=2,
                  batch=2048, negatives=500, steps=10, e2e_steps=(6, 18),
                  producers=min(4, max(1, available_cpus() - 2)), fp32=True, vgg_channels=VGG16_CHANNELS,
                  vgg_fc=VGG16_FC, vgg_batch=64, vgg_repeats=10, ddp_steps=10)
    changes = {k: v for k, v in (("items", a.items), ("steps", a.steps), ("producers", a.producers))
               if v is not None}
    if a.no_fp32:
        changes["fp32"] = False
    return dataclasses.replace(s, **changes)


def size_args(a) -> list[str]:
    """The flags that fix the sizes: passed to every step process and written into every command."""
    out = ["--cpu-smoke"] if a.cpu_smoke else []
    for flag, value in (("--items", a.items), ("--steps", a.steps), ("--producers", a.producers)):
        if value is not None:
            out += [flag, str(value)]
    return out + (["--no-fp32"] if a.no_fp32 else [])


def step_command(a, step: str) -> str:
    """The command that runs ``step`` alone with the same sizes: what every figure is printed with."""
    return shlex.join(["bash", "bench/gpu_check.sh", *size_args(a), "--only", step])


# --------------------------------------------------------------------------------------------------
# helpers shared by the step processes
# --------------------------------------------------------------------------------------------------

def _sync(device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StepResult:
    """One step's figures, saved after every figure so a step killed at its time limit keeps them."""

    def __init__(self, path: Path, step: str, command: str, smoke: bool):
        self.path, self.step, self.command, self.smoke = path, step, command, smoke
        self.data: dict = {"figures": {}, "info": {}, "printed": []}

    def figure(self, name: str, value, unit: str, what: str) -> None:
        node = self.data["figures"]
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        shown = f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        tag = "SMOKE (not a performance figure)" if self.smoke else "FIGURE"
        print(f"{tag} {self.step}.{name} = {shown} {unit}  ({what})  command: {self.command}", flush=True)
        self.data["printed"].append({"step": self.step, "name": name, "value": value, "unit": unit, "what": what})
        self.save()

    def info(self, **kw) -> None:
        self.data["info"].update(kw)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def _data(sizes: Sizes, cache: Path, log) -> dict:
    """The synthetic graph's features, neighbourhoods, negative candidates and positive pairs.

    Built once (``bench/synthetic.py`` graph and features, the project's random walks, the pairs of
    ``bench/bench_stages_scale.py``) and kept in ``cache`` for the later steps.
    """
    from pinsage.graph.neighbors import Neighbors

    f = cache / f"data_{sizes.items}_{sizes.feature_dim}_{sizes.top_t}.npz"
    if f.exists():
        z = np.load(f)
        return {"features": z["features"], "neighbors": Neighbors(z["nbr_items"], z["nbr_weights"], z["nbr_mask"]),
                "candidates": z["candidates"], "pairs": z["pairs"], "info": {"from_cache": True}}
    from bench.bench_stages_scale import _positive_pairs
    from bench.synthetic import synthetic_features, synthetic_graph
    from pinsage.graph.walks import WalkConfig, random_walk_neighbors

    t0 = time.perf_counter()
    graph = synthetic_graph(sizes.items, sizes.contexts, sizes.edges, seed=0)
    t_graph = time.perf_counter() - t0
    features = synthetic_features(graph.n_items, sizes.feature_dim, seed=0)
    t0 = time.perf_counter()
    neighbors, _ = random_walk_neighbors(graph, WalkConfig(top_t=sizes.top_t, seed=0))
    t_walks = time.perf_counter() - t0
    candidates = np.flatnonzero(graph.item_degree() > 0)
    n_pairs = sizes.batch * max(sizes.steps + 1, max(sizes.e2e_steps), sizes.ddp_steps)
    pairs = _positive_pairs(graph, n_pairs, seed=0)
    info = {"from_cache": False, "items": graph.n_items, "contexts": graph.n_contexts, "edges": graph.n_edges,
            "graph_s": round(t_graph, 2), "walks_s": round(t_walks, 2)}
    log(f"synthetic graph: {graph.n_items:,} items, {graph.n_contexts:,} contexts, {graph.n_edges:,} edges "
        f"in {t_graph:.1f}s; T = {sizes.top_t} neighbourhoods in {t_walks:.1f}s")
    tmp = cache / f"{f.stem}.{os.getpid()}.npz"  # atomic: DDP ranks may write at once
    np.savez(tmp, features=features, nbr_items=neighbors.items, nbr_weights=neighbors.weights,
             nbr_mask=neighbors.mask, candidates=candidates, pairs=pairs)
    os.replace(tmp, f)
    return {"features": features, "neighbors": neighbors, "candidates": candidates, "pairs": pairs, "info": info}


class Utilisation:
    """The GPU's utilisation (%) sampled every 0.2 s while the ``with`` block runs:
    ``torch.cuda.utilization()`` (needs pynvml), else ``nvidia-smi``, else unavailable with the reason."""

    def __init__(self, device):
        import torch

        self.samples: list[float] = []
        self.source, self.reason, self._read = None, None, None
        self._stop = threading.Event()
        if device.type != "cuda":
            self.reason = "no CUDA device (a CPU run)"
            return
        index = device.index or 0
        try:
            torch.cuda.utilization(index)
            self.source, self._read = "torch.cuda.utilization", lambda: float(torch.cuda.utilization(index))
            return
        except Exception as exc:  # pynvml missing, NVML not loadable, ...
            why = f"torch.cuda.utilization: {type(exc).__name__}: {exc}"
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", str(index)]

        def smi() -> float:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return float(out.stdout.split()[0])

        try:
            smi()
            self.source, self._read = "nvidia-smi", smi
        except Exception as exc:
            self.reason = f"{why}; nvidia-smi: {type(exc).__name__}: {exc}"

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.samples.append(self._read())

    def __enter__(self):
        if self._read is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._read is not None:
            self._stop.set()
            self._thread.join()

    def result(self) -> dict:
        if self._read is None:
            return {"unavailable": self.reason}
        if not self.samples:
            return {"unavailable": f"{self.source}: no sample taken (the run was shorter than 0.2 s)"}
        return {"mean_percent": float(np.mean(self.samples)), "max_percent": float(np.max(self.samples)),
                "samples": len(self.samples), "source": self.source}


# --------------------------------------------------------------------------------------------------
# step: train
# --------------------------------------------------------------------------------------------------

def _step_loss(model, b, z):
    """The loss of one minibatch exactly as ``pinsage/model/train.py`` computes it (softmax loss)."""
    from pinsage.model.losses import sampled_softmax_loss
    from pinsage.model.train import TrainConfig

    bias = model.cold_bias
    return sampled_softmax_loss(
        z[b.query], z[b.positive], z[b.negative], TrainConfig().temperature, z_hard=z[b.hard],
        negative_mask=b.negative_item[None, :] != b.positive_item[:, None],
        hard_mask=b.hard_item != b.positive_item[:, None],
        positive_bias=None if bias is None else bias * b.positive_cold,
        negative_bias=None if bias is None else bias * b.negative_cold)


def _pinned(batch):
    """``batch`` with every tensor in page-locked memory (what a pinned copy would start from)."""
    from pinsage.model.sampler import Minibatch, TensorBlock

    moved = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    moved = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in moved.items()}
    moved["blocks"] = [TensorBlock(b.n_dst, b.neighbors.pin_memory(), b.weights.pin_memory(), b.mask.pin_memory())
                       for b in batch.blocks]
    return Minibatch(**moved)


def _timed_steps(sizes: Sizes, features, batches, device, precision: str, id_table: bool) -> dict:
    """One model trained over ``batches`` (the first is a warm-up), each part of a step timed alone."""
    import torch

    from pinsage.model.network import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_dim=sizes.hidden, output_dim=sizes.output, n_layers=sizes.layers, id_embedding=id_table)
    model = build_model(cfg, features).to(device).train()
    table = model.id_embedding.weight if model.id_embedding is not None else None
    others = [p for p in model.parameters() if p is not table]
    # two Adams with the same settings update exactly as train.py's one Adam over every parameter
    opt_table = torch.optim.Adam([table], lr=1e-3) if table is not None else None
    opt_other = torch.optim.Adam(others, lr=1e-3)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    parts = collections.defaultdict(list)
    losses = []
    for i, cpu_batch in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        b = cpu_batch.to(device)
        _sync(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = model(b.x, b.item_index, b.blocks)  # (N_targets, D)
        loss = _step_loss(model, b, z.float())  # the loss in fp32, as train.py
        opt_other.zero_grad(set_to_none=True)
        if opt_table is not None:
            opt_table.zero_grad(set_to_none=True)
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        if opt_table is not None:
            opt_table.step()
        _sync(device)
        t3 = time.perf_counter()
        opt_other.step()
        _sync(device)
        t4 = time.perf_counter()
        losses.append(float(loss.detach()))
        if i == 0:
            continue  # warm-up: allocator, kernels, cuBLAS / oneDNN choices
        parts["host_to_device_s"].append(t1 - t0)
        parts["forward_backward_s"].append(t2 - t1)
        if table is not None:
            parts["id_embedding_table_s"].append(t3 - t2)
        parts["adam_s"].append(t4 - t3)
        del b, z, loss
    out = {k: float(np.mean(v)) for k, v in parts.items()}
    out["losses"] = losses
    out["weights_device"] = str(next(model.parameters()).device)
    if table is not None:  # the table's gather and dense gradient, alone (inside forward_backward_s)
        lookups = []
        for cpu_batch in batches[1:4]:
            idx = cpu_batch.item_index.to(device).clamp(min=0)
            with torch.no_grad():
                grad = torch.ones(len(idx), sizes.hidden, device=device)
            _sync(device)
            t0 = time.perf_counter()
            model.id_embedding(idx).backward(grad)
            _sync(device)
            lookups.append(time.perf_counter() - t0)
            table.grad = None
            del idx, grad
        out["id_table_lookup_fwd_bwd_s"] = float(np.mean(lookups))
        out["id_table_mib"] = table.numel() * table.element_size() / 2**20
    if device.type == "cuda":
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model, opt_table, opt_other, table, others
    _free(device)
    return out


def _end_to_end(sizes: Sizes, data: dict, device, res: StepResult, deadline: float, log) -> None:
    """``train_model`` (producer processes, overlapped with the device) for a short and a long run:
    examples/s from their difference, so the start-up and the final copies cancel."""
    import torch

    from pinsage.model.network import ModelConfig, build_model
    from pinsage.model.sampler import SamplerConfig
    from pinsage.model.train import TrainConfig, TrainData, train_model

    sampler = SamplerConfig(batch_size=sizes.batch, n_shared_negatives=sizes.negatives, hard_negatives=False)
    cfg = TrainConfig(epochs=1, patience=0, num_workers=sizes.producers, device=device.type, warmup_steps=1,
                      sampler=sampler, precision="bf16", seed=0)
    seconds, util = {}, None
    for n in sizes.e2e_steps:
        left = deadline - time.time()
        if seconds and left < 1.5 * seconds[sizes.e2e_steps[0]] * n / sizes.e2e_steps[0]:
            res.info(end_to_end_skipped=f"the {n}-step run would not fit in the {left:.0f} s left")
            log(f"end to end: the {n}-step run skipped ({left:.0f} s left)")
            return
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden_dim=sizes.hidden, output_dim=sizes.output, n_layers=sizes.layers),
                            data["features"])
        pairs = data["pairs"][:n * sizes.batch]
        train_data = TrainData(lambda epoch, p=pairs: p, data["features"], data["neighbors"], None,
                               data["candidates"])
        gpu = Utilisation(device) if n == sizes.e2e_steps[-1] else contextlib.nullcontext()
        with gpu:
            t0 = time.perf_counter()
            model, state = train_model(model, train_data, cfg, log=lambda s: None)
            seconds[n] = time.perf_counter() - t0
        if not np.isfinite(state.history[-1]["loss"]):
            raise RuntimeError(f"end to end: the {n}-step run's loss is {state.history[-1]['loss']}")
        if n == sizes.e2e_steps[-1]:
            util = gpu.result()
        del model, state, train_data
        _free(device)
    short, long = sizes.e2e_steps
    res.info(end_to_end_runs_s={str(k): round(v, 3) for k, v in seconds.items()}, producers=sizes.producers)
    res.figure("end_to_end.examples_per_s_long_run", long * sizes.batch / seconds[long], "examples/s",
               f"train_model, {long} steps, {sizes.producers} producer processes, bf16, start-up and final "
               "copies included: a lower bound")
    diff = seconds[long] - seconds[short]
    if diff > 0:
        res.figure("end_to_end.examples_per_s", (long - short) * sizes.batch / diff, "examples/s",
                   f"train_model, bf16, {sizes.producers} producer processes: ({long} - {short}) steps x "
                   f"{sizes.batch} / (difference of the two runs' seconds)")
    else:
        res.info(end_to_end_examples_per_s=f"not measurable: the {long}-step run was not slower than the "
                                           f"{short}-step one ({seconds[long]:.2f} s vs {seconds[short]:.2f} s)")
    if "mean_percent" in util:
        res.figure("end_to_end.gpu_utilisation_percent", util["mean_percent"], "%",
                   f"mean over the {long}-step run, {util['samples']} samples by {util['source']}")
    res.info(gpu_utilisation=util)
    if "unavailable" in util:
        print(f"GPU utilisation: unavailable ({util['unavailable']})", flush=True)


def step_train(sizes: Sizes, device, res: StepResult, deadline: float, cache: Path, log) -> None:
    import torch

    from pinsage.model.sampler import MinibatchProducer, SamplerConfig

    data = _data(sizes, cache, log)
    res.info(data=data["info"], threads=torch.get_num_threads())
    sampler = SamplerConfig(batch_size=sizes.batch, n_shared_negatives=sizes.negatives, hard_negatives=False)
    producer = MinibatchProducer(data["pairs"], data["features"], data["neighbors"], None, sampler, 0, 0,
                                 data["candidates"], sizes.layers)
    batches, produce = [], []
    for b in range(sizes.steps + 1):
        t0 = time.perf_counter()
        batches.append(producer.make_batch(b))
        produce.append(time.perf_counter() - t0)
    producer_s = float(np.mean(produce[1:]))
    res.info(input_nodes_per_batch=int(np.mean([len(b.x) for b in batches])),
             batch_mib=float(np.mean([sum(t.numel() * t.element_size() for t in
                                          [b.x, b.item_index] + [u for k in b.blocks for u in
                                                                 (k.neighbors, k.weights, k.mask)])
                                      for b in batches]) / 2**20))
    log(f"{len(batches)} minibatches of {sizes.batch}: {res.data['info']['input_nodes_per_batch']:,} input "
        f"nodes each, {producer_s:.3f} s each to build")

    # bf16 (the GPU setting), the same without the id table, the real loop; then fp32 if time allows
    _breakdown(sizes, data, batches, producer_s, device, "bf16", res, log)
    if deadline - time.time() < 20:
        res.info(end_to_end_skipped="no time left in this step's limit")
    else:
        _end_to_end(sizes, data, device, res, deadline, log)
    if not sizes.fp32:
        res.info(fp32="skipped: --no-fp32")
    elif deadline - time.time() < 30 + 2 * res.data["info"]["bf16_loop_s"]:
        res.info(fp32=f"skipped: {deadline - time.time():.0f} s left in this step's time limit")
        log("fp32 skipped: not enough time left")
    else:
        try:
            _breakdown(sizes, data, batches, producer_s, device, "fp32", res, log)
        except Exception as exc:  # e.g. out of memory: the bf16 figures stand
            res.info(fp32=f"failed: {type(exc).__name__}: {exc}")
            log(f"fp32 failed: {type(exc).__name__}: {exc}")
            _free(device)


def _breakdown(sizes: Sizes, data: dict, batches: list, producer_s: float, device, precision: str,
               res: StepResult, log) -> None:
    """The parts of a step in ``precision``; for bf16 also pinned copies and the features-only model."""
    t0 = time.perf_counter()
    r = _timed_steps(sizes, data["features"], batches, device, precision, id_table=True)
    res.info(**{f"{precision}_loop_s": round(time.perf_counter() - t0, 2),
                f"{precision}_losses": r["losses"], f"{precision}_weights_device": r["weights_device"]})
    if not all(np.isfinite(r["losses"])):
        raise RuntimeError(f"{precision}: a loss is not finite: {r['losses']}")
    parts = {"producer_s": producer_s, "host_to_device_s": r["host_to_device_s"],
             "forward_backward_s": r["forward_backward_s"], "id_embedding_table_s": r["id_embedding_table_s"],
             "adam_s": r["adam_s"]}
    what = {"producer_s": "MinibatchProducer.make_batch on the CPU (pairs, negatives, K-hop graph, features)",
            "host_to_device_s": "Minibatch.to(device) as train.py copies it",
            "forward_backward_s": f"forward ({precision}), loss, backward; the id table's gather and dense "
                                  "gradient included",
            "id_embedding_table_s": f"Adam's update of the {len(data['features']):,} x {sizes.hidden} id-embedding "
                                    "table (dense: every row, every step)",
            "adam_s": "Adam on every other parameter"}
    for k, v in parts.items():
        res.figure(f"{precision}.breakdown_s.{k}", v, "s per step", what[k])
    total = sum(parts.values())
    res.data["figures"][precision]["breakdown_share"] = {k: v / total for k, v in parts.items()}
    res.figure(f"{precision}.examples_per_s_serial", sizes.batch / total, "examples/s",
               "one process, the parts one after the other (no overlap of producer and device)")
    res.figure(f"{precision}.examples_per_s_device_bound", sizes.batch / (total - producer_s), "examples/s",
               "copy + forward/backward + Adam only: the rate when producers keep up")
    res.figure(f"{precision}.id_table_lookup_fwd_bwd_s", r["id_table_lookup_fwd_bwd_s"], "s per step",
               "the id table's gather + dense gradient alone (part of forward_backward_s)")
    if "peak_gpu_memory_gib" in r:
        res.figure(f"{precision}.peak_gpu_memory_gib", r["peak_gpu_memory_gib"], "GiB",
                   "torch.cuda.max_memory_allocated over the timed steps")
    if precision != "bf16":
        return
    if device.type == "cuda":  # what pinned memory would save (train.py's copies are pageable)
        pin, copy = [], []
        for cpu_batch in batches[1:]:
            t0 = time.perf_counter()
            pinned = _pinned(cpu_batch)
            pin.append(time.perf_counter() - t0)
            _sync(device)
            t0 = time.perf_counter()
            on_device = pinned.to(device)
            _sync(device)
            copy.append(time.perf_counter() - t0)
            del pinned, on_device
        res.figure("bf16.host_to_device_pinned_s", float(np.mean(copy)), "s per step",
                   "the same copy from page-locked memory (not what train.py does: its DataLoader "
                   "cannot pin a Minibatch)")
        res.figure("bf16.pin_memory_s", float(np.mean(pin)), "s per step", "pinning one minibatch on the CPU")
    # the paper's features-only model on the same minibatches: what the id table costs in all
    r0 = _timed_steps(sizes, data["features"], batches, device, "bf16", id_table=False)
    no_table = r0["host_to_device_s"] + r0["forward_backward_s"] + r0["adam_s"]
    res.figure("bf16_features_only.step_s", no_table, "s per step",
               "copy + forward/backward + Adam without the id-embedding table (ModelConfig.id_embedding=False)")
    res.figure("bf16_features_only.examples_per_s_device_bound", sizes.batch / no_table, "examples/s",
               "without the id-embedding table, when producers keep up")
    log(f"bf16: {sizes.batch / total:,.0f} examples/s serial; shares "
        + ", ".join(f"{k[:-2]} {v / total:.0%}" for k, v in parts.items()))


# --------------------------------------------------------------------------------------------------
# step: vgg
# --------------------------------------------------------------------------------------------------

def step_vgg(sizes: Sizes, device, res: StepResult, deadline: float, cache: Path, log) -> None:
    import torch

    from bench.bench_vgg import time_forward
    from pinsage.features.vgg import VGG16

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = VGG16(sizes.vgg_channels, sizes.vgg_fc).eval().to(device)  # RANDOM weights: timing only
    pixels = np.random.default_rng(0).integers(0, 256, (sizes.vgg_batch, 224, 224, 3), dtype=np.uint8)
    res.info(model_build_s=round(time.perf_counter() - t0, 2), channels=list(sizes.vgg_channels), fc=sizes.vgg_fc,
             batch=sizes.vgg_batch, repeats=sizes.vgg_repeats, parameters=sum(p.numel() for p in model.parameters()),
             cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
             matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    what = (f"VGG16 fc6, RANDOM weights, {sizes.vgg_batch} synthetic 224x224 images per batch, channels-last, "
            "normalisation included (bench/bench_vgg.py time_forward)")
    fp32 = time_forward(model, device, pixels, sizes.vgg_repeats, channels_last=True)
    res.figure("fp32_images_per_s", fp32, "images/s",
               what + ("; cuDNN may use TF32 for the convolutions" if torch.backends.cudnn.allow_tf32 and
                       device.type == "cuda" else ""))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        bf16 = time_forward(model, device, pixels, sizes.vgg_repeats, channels_last=True)
    res.figure("bf16_images_per_s", bf16, "images/s", what + ", bf16 autocast")
    if device.type == "cuda":
        res.figure("peak_gpu_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, "GiB",
                   "torch.cuda.max_memory_allocated")


# --------------------------------------------------------------------------------------------------
# step: export
# --------------------------------------------------------------------------------------------------

def step_export(sizes: Sizes, device, res: StepResult, deadline: float, cache: Path, log) -> None:
    import torch

    from bench.synthetic import synthetic_graph
    from pinsage.export.embed import export_embeddings
    from pinsage.graph.walks import WalkConfig, random_walk_neighbors
    from pinsage.model.network import ModelConfig, build_model

    data = _data(sizes, cache, log)
    features, neighbors = data["features"], data["neighbors"]
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=sizes.hidden, output_dim=sizes.output, n_layers=sizes.layers),
                        features).to(device)  # untrained: the arithmetic of a trained one
    warm_graph = synthetic_graph(200, 100, 2000, seed=1)
    warm_nbrs, _ = random_walk_neighbors(warm_graph, WalkConfig(top_t=sizes.top_t, seed=1))
    export_embeddings(model, features[:200], warm_nbrs)  # warm-up: kernels, allocator
    _sync(device)
    t0 = time.perf_counter()
    emb = export_embeddings(model, features, neighbors)
    _sync(device)
    seconds = time.perf_counter() - t0
    norms = np.linalg.norm(emb, axis=1)
    if emb.shape != (len(features), sizes.output) or not np.isfinite(emb).all() or not np.allclose(norms, 1, atol=1e-3):
        raise RuntimeError(f"export: shape {emb.shape}, finite {np.isfinite(emb).all()}, "
                           f"norms in [{norms.min():.4f}, {norms.max():.4f}]")
    res.info(items=len(features), seconds=round(seconds, 3), model_device=str(next(model.parameters()).device),
             peak_rss_gib=round(_peak_rss_gib(), 2), data=data["info"])
    res.figure("items_per_s", len(features) / seconds, "items/s",
               f"export_embeddings of {len(features):,} items on {device.type}, hidden {sizes.hidden}, output "
               f"{sizes.output}, T = {sizes.top_t}, K = {sizes.layers}, fp32, chunks of 16,384")
    if device.type == "cuda":
        res.figure("peak_gpu_memory_gib", torch.cuda.max_memory_allocated(device) / 2**30, "GiB",
                   "torch.cuda.max_memory_allocated")


# --------------------------------------------------------------------------------------------------
# step: ddp (the worker runs under torchrun)
# --------------------------------------------------------------------------------------------------

def ddp_worker(a) -> int:
    import torch
    import torch.distributed as dist

    from pinsage.model.distributed import group_from_env
    from pinsage.model.network import ModelConfig, build_model
    from pinsage.model.sampler import SamplerConfig
    from pinsage.model.train import TrainConfig, TrainData, train_model

    sizes = sizes_from(a)
    group = group_from_env()
    data = _data(sizes, Path(a.cache), lambda s: print(s, flush=True) if group.is_main else None)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_dim=sizes.hidden, output_dim=sizes.output, n_layers=sizes.layers),
                        data["features"])
    pairs = data["pairs"][:sizes.ddp_steps * sizes.batch]
    sampler = SamplerConfig(batch_size=sizes.batch, n_shared_negatives=sizes.negatives, hard_negatives=False)
    cfg = TrainConfig(epochs=1, patience=0, num_workers=0 if a.cpu_smoke else -1,
                      device="cpu" if a.cpu_smoke else "cuda", warmup_steps=1, sampler=sampler, precision="bf16",
                      seed=0)
    seen = {}

    def on_epoch_end(record: dict) -> None:  # the process group is alive here
        seen["backend"] = str(dist.get_backend()) if dist.is_initialized() else None
        seen["record"] = record

    t0 = time.perf_counter()
    model, state = train_model(model, TrainData(lambda e: pairs, data["features"], data["neighbors"], None,
                                                data["candidates"]), cfg, log=lambda s: None, group=group,
                               on_epoch_end=on_epoch_end)
    seconds = time.perf_counter() - t0
    if group.is_main:
        record = seen["record"]
        out = {"world_size": group.world_size, "backend": seen["backend"], "train_model_s": seconds,
               "epoch_s": record["seconds"], "loss": record["loss"], "steps": sizes.ddp_steps,
               "examples_per_s": len(pairs) / record["seconds"], "processes_in_history": record["processes"]}
        Path(a.result).write_text(json.dumps(out))
    return 0


def run_ddp(a, sizes: Sizes, machine: dict, cache: Path, timeout: float, log) -> dict:
    """The ``ddp`` step, from the parent: torchrun with one process per GPU (gloo, 2 processes, smoke)."""
    if a.cpu_smoke:
        world, backend = 2, "gloo"
    else:
        world, backend = machine.get("device_count", 0), "nccl"
        if world < 2:
            return {"status": "skipped",
                    "reason": f"this machine has {world} GPU: DDP over NCCL needs one process per GPU, so at "
                              "least 2 GPUs (NCCL refuses two ranks on one GPU), and the project's DDP path "
                              "(pinsage.model.distributed.start) joins no process group at world size 1, so a "
                              "1-process run would exercise neither NCCL nor DDP"}
    result = cache / "ddp_result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           str(ROOT / "bench" / "gpu_check.py"), "--ddp-worker", "--cache", str(cache), "--result", str(result),
           *size_args(a)]
    log(f"ddp: {shlex.join(cmd)}")
    rc, tail, timed_out = _stream(cmd, timeout, "ddp")
    out: dict = {"command": step_command(a, "ddp"), "torchrun_command": shlex.join(cmd)}
    if rc != 0 or not result.exists():
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {rc}"
        return {**out, "status": "failed", "error": f"torchrun {why}", "output_tail": tail}
    r = json.loads(result.read_text())
    if r["backend"] != backend or r["world_size"] != world or r["processes_in_history"] != world:
        return {**out, "status": "failed", "output_tail": tail,
                "error": f"expected {world} processes over {backend}, got {r}"}
    if not np.isfinite(r["loss"]):
        return {**out, "status": "failed", "error": f"loss {r['loss']}", "output_tail": tail}
    figs = []
    for name, value, unit, what in (
            ("world_size", world, "processes", f"torchrun --nproc_per_node={world}"),
            ("backend", r["backend"], "", "torch.distributed.get_backend() during training"),
            ("examples_per_s", r["examples_per_s"], "examples/s",
             f"train_model under DDP, {sizes.ddp_steps} global minibatches of {sizes.batch}, one epoch's seconds "
             "(loader start-up included)")):
        tag = "SMOKE (not a performance figure)" if a.cpu_smoke else "FIGURE"
        shown = f"{value:,.4g}" if isinstance(value, float) else str(value)
        print(f"{tag} ddp.{name} = {shown} {unit}  ({what})  command: {out['command']}", flush=True)
        figs.append({"step": "ddp", "name": name, "value": value, "unit": unit, "what": what})
    return {**out, "status": "ok", "figures": {"world_size": world, "backend": r["backend"],
                                               "examples_per_s": r["examples_per_s"]},
            "info": r, "printed": figs}


# --------------------------------------------------------------------------------------------------
# the parent: machine description, steps in processes, the JSON file
# --------------------------------------------------------------------------------------------------

def _stream(cmd: list[str], timeout: float, tag: str, cwd: Path = ROOT) -> tuple[int | None, str, bool]:
    """Run ``cmd`` in its own session, echoing its output; kill the session past ``timeout`` seconds.
    Returns (exit code, the output's last lines, timed out)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               PYTHONUNBUFFERED="1")
    tail: collections.deque = collections.deque(maxlen=60)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, errors="replace")

    def pump() -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            print(f"  [{tag}] {line}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the step's whole session: torchrun, producers, ...
        proc.wait()
    reader.join(timeout=5)
    return proc.returncode, "\n".join(tail), timed_out


def describe_machine() -> dict:
    import numba
    import torch

    from pinsage.util.resources import available_cpus

    m = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
         "torch_cuda_build": torch.version.cuda, "numpy": np.__version__, "numba": numba.__version__,
         "cpu_count": os.cpu_count(), "cpus_available": available_cpus(),
         "cuda_available": torch.cuda.is_available(), "device_count": 0, "devices": []}
    if m["cuda_available"]:
        m["device_count"] = torch.cuda.device_count()
        for i in range(m["device_count"]):
            p = torch.cuda.get_device_properties(i)
            m["devices"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                                 "memory_gib": round(p.total_memory / 2**30, 1)})
        m["cudnn"] = torch.backends.cudnn.version()
        m["bf16_supported"] = torch.cuda.is_bf16_supported()
        m["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        m["nvidia_smi"] = out.stdout.strip() if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        m["nvidia_smi"] = f"unavailable: {type(exc).__name__}: {exc}"
    return m


def run_pytest_cuda(a, machine: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda"]
    if a.cpu_smoke:
        return {"status": "skipped", "command": shlex.join(cmd),
                "reason": "--cpu-smoke: no CUDA device is used, and the cuda tests skip themselves without one"}
    rc, tail, timed_out = _stream(cmd, timeout, "pytest_cuda")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                                               tail.splitlines()[-1] if tail else "")}
    out = {"command": shlex.join(cmd), "counts": counts, "output_tail": tail}
    tag = "FIGURE"
    for k, v in counts.items():
        print(f"{tag} pytest_cuda.{k} = {v} tests  command: {shlex.join(cmd)}", flush=True)
    out["printed"] = [{"step": "pytest_cuda", "name": k, "value": v, "unit": "tests", "what": "pytest summary"}
                      for k, v in counts.items()]
    if timed_out:
        return {**out, "status": "failed", "error": f"timed out after {timeout:.0f} s"}
    if rc != 0:
        return {**out, "status": "failed", "error": f"pytest exit code {rc}"}
    if counts.get("skipped"):
        return {**out, "status": "failed", "error": f"{counts['skipped']} cuda test(s) skipped on a CUDA machine"}
    if not counts.get("passed"):
        return {**out, "status": "failed", "error": "no cuda test passed"}
    return {**out, "status": "ok", "figures": counts}


def run_step_process(a, step: str, cache: Path, timeout: float) -> dict:
    result = cache / f"{step}_result.json"
    command = step_command(a, step)
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--step", step, "--cache", str(cache),
           "--result", str(result), "--deadline", f"{time.time() + timeout - 5:.0f}", "--repro", command,
           *size_args(a)]
    rc, tail, timed_out = _stream(cmd, timeout, step)
    data = json.loads(result.read_text()) if result.exists() else {"figures": {}, "info": {}, "printed": []}
    out = {"command": command, "figures": data["figures"], "info": data["info"], "printed": data["printed"]}
    if timed_out:
        return {**out, "status": "failed", "error": f"timed out after {timeout:.0f} s (figures so far kept)",
                "output_tail": tail}
    if rc != 0 or data.get("error"):
        return {**out, "status": "failed", "error": data.get("error") or f"exit code {rc}",
                "output_tail": data.get("traceback") or tail}
    return {**out, "status": "ok"}


def parent(a) -> int:
    started = time.time()
    sizes = sizes_from(a)
    invoked = (shlex.join(["bash", "bench/gpu_check.sh", *sys.argv[1:]]) if os.environ.get("GPU_CHECK_WRAPPER")
               else shlex.join(["python", "bench/gpu_check.py", *sys.argv[1:]]))
    out_path = Path(a.out).resolve()
    budget = a.budget_s if a.budget_s is not None else (240 if a.cpu_smoke else 470)
    limits = SMOKE_LIMITS if a.cpu_smoke else LIMITS
    wanted = [s for s in STEPS if not a.only or s in a.only]
    report = {"check": "bench/gpu_check.py (issue 32)", "mode": "cpu-smoke" if a.cpu_smoke else "gpu",
              "command": invoked,
              "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "budget_s": budget, "gpu_goal_examples_per_s": GPU_GOAL, "sizes": dataclasses.asdict(sizes)}
    if a.cpu_smoke:
        report["note"] = SMOKE_NOTE
        print(SMOKE_NOTE, flush=True)
    print(f"gpu_check: {invoked}", flush=True)
    report["machine"] = machine = describe_machine()
    devs = ", ".join(d["name"] for d in machine["devices"]) or "no CUDA device"
    print(f"machine: torch {machine['torch']} (CUDA build {machine['torch_cuda_build']}), {devs}, "
          f"{machine['cpus_available']} CPUs", flush=True)
    report["steps"] = {}

    def write() -> None:
        report["wall_s"] = round(time.time() - started, 1)
        report["figures"] = [dict(f, command=s.get("command")) for s in report["steps"].values()
                             for f in s.get("printed", [])]
        tmp = out_path.with_suffix(out_path.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, out_path)

    no_cuda = (not a.cpu_smoke and not machine["cuda_available"]) and (
        f"CUDA is not available to torch {machine['torch']} (CUDA build: {machine['torch_cuda_build']}); "
        "run with --cpu-smoke for the CPU smoke test")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        cache = Path(tmp)
        for i, step in enumerate(wanted):
            t0 = time.time()
            left = budget - (t0 - started)
            reserve = sum(limits[s][1] for s in wanted[i + 1:])
            timeout = min(limits[step][0], left - reserve)
            print(f"\n== {step} (at most {max(0, timeout):.0f} s; {left:.0f} s of the budget left)", flush=True)
            if no_cuda:
                r = {"status": "failed", "error": no_cuda, "command": step_command(a, step)}
            elif timeout < limits[step][1]:
                r = {"status": "skipped", "command": step_command(a, step),
                     "reason": f"time budget: {left:.0f} s left of {budget} s, {reserve} s kept for the later steps"}
            else:
                try:
                    if step == "pytest_cuda":
                        r = run_pytest_cuda(a, machine, timeout)
                    elif step == "ddp":
                        r = run_ddp(a, sizes, machine, cache, timeout, lambda s: print(s, flush=True))
                    else:
                        r = run_step_process(a, step, cache, timeout)
                except Exception as exc:  # the check's own bug: report it, run the next step
                    r = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "command": step_command(a, step)}
            r["seconds"] = round(time.time() - t0, 1)
            r["timeout_s"] = round(timeout, 1)
            report["steps"][step] = r
            why = r.get("error") or r.get("reason") or ""
            print(f"== {step}: {r['status']} in {r['seconds']} s{': ' + why if why else ''}", flush=True)
            write()
    write()
    print(f"\n{'smoke-test figures (not performance figures)' if a.cpu_smoke else 'figures'}, each with its command:")
    for f in report["figures"]:
        v = f["value"]
        shown = f"{v:,.4g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
        print(f"  {f['step']}.{f['name']} = {shown} {f['unit']}   [{f['command']}]")
    print("\nsteps: " + ", ".join(f"{k} {v['status']}" for k, v in report["steps"].items()))
    print(f"wrote {out_path} ({report['wall_s']} s)")
    return 1 if any(s["status"] == "failed" for s in report["steps"].values()) else 0


def child(a) -> int:
    """One step, in its own process: figures into ``--result`` as they come."""
    import traceback

    import torch

    smoke = a.cpu_smoke
    res = StepResult(Path(a.result), a.step, a.repro, smoke)
    res.save()
    try:
        if not smoke and not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        device = torch.device("cpu" if smoke else "cuda", None if smoke else 0)
        sizes = sizes_from(a)
        res.info(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
        fn = {"train": step_train, "vgg": step_vgg, "export": step_export}[a.step]
        fn(sizes, device, res, a.deadline, Path(a.cache), lambda s: print(s, flush=True))
    except Exception as exc:
        res.data["error"] = f"{type(exc).__name__}: {exc}"
        res.data["traceback"] = traceback.format_exc()[-4000:]
        res.save()
        print(res.data["traceback"], file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="the same code paths at tiny sizes on the CPU")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file (default: gpu_check.json here)")
    p.add_argument("--only", nargs="+", choices=STEPS, help="run these steps only")
    p.add_argument("--budget-s", type=float, default=None, help="total seconds (default 470; smoke 240)")
    p.add_argument("--items", type=int, default=None, help="catalogue size (default 1,000,000; smoke 2,000)")
    p.add_argument("--steps", type=int, default=None, help="timed steps of the breakdown (default 10; smoke 3)")
    p.add_argument("--producers", type=int, default=None, help="producer processes of the end-to-end runs")
    p.add_argument("--no-fp32", action="store_true", help="time the training step in bf16 only")
    # internal: one step in its own process, or one DDP rank under torchrun
    p.add_argument("--step", choices=("train", "vgg", "export"), help=argparse.SUPPRESS)
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--repro", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.ddp_worker:
        return ddp_worker(a)
    if a.step:
        a.deadline = a.deadline or time.time() + 3600
        return child(a)
    return parent(a)


if __name__ == "__main__":
    sys.exit(main())
