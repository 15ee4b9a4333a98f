"""Data-parallel training: torch DistributedDataParallel over processes launched by ``torchrun``.

One process per GPU (or, on a CPU machine, per process slot with the gloo backend). Every process
holds the whole model and the whole graph, takes its share of every minibatch (see
``MinibatchProducer``), and DDP averages the gradients, so one training step sees the global batch
exactly as a single process would. Process 0 evaluates, checkpoints and writes the model; the others
receive its validation score so every process picks the same best epoch.

``pipeline.train`` launches this when ``TrainConfig.nproc > 1``:

    python -m torch.distributed.run --standalone --nproc_per_node N -m pinsage.ddp --config CFG.json
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0  # this process's place among all training processes
    world_size: int = 1  # number of training processes
    local_rank: int = 0  # place on this machine: picks the GPU

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = ProcessGroup()


def group_from_env() -> ProcessGroup:
    """The group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
    return ProcessGroup(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                        int(os.environ.get("LOCAL_RANK", 0)))


def start(group: ProcessGroup, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs); returns this process's device."""
    if not group.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def stop(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, group: ProcessGroup, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` (which keeps its own parameters: checkpoints stay plain state dicts)."""
    if not group.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_float(value: float, group: ProcessGroup, device: torch.device) -> float:
    """Process 0's ``value`` on every process."""
    if not group.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def mean_over_processes(value: float, group: ProcessGroup, device: torch.device) -> float:
    if not group.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / group.world_size


def barrier(group: ProcessGroup) -> None:
    if group.distributed:
        dist.barrier()


def launch(config_path: Path, nproc: int, log=print) -> None:
    """Run ``pinsage.ddp`` on ``nproc`` local processes with torchrun; raises if any process fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pinsage.ddp", "--config", str(config_path)]
    log(f"data-parallel training on {nproc} processes: {' '.join(cmd[1:])}")
    root = str(Path(__file__).resolve().parent.parent)  # so the workers import this very package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"data-parallel training failed (torchrun exit code {done.returncode}); "
                           "each process's log is above")
