"""How many CPU threads a stage may use, and sizing every thread pool to it.

A stage that sizes its pools to the whole machine while another task shares the same cores runs
far slower than half speed: torch's OpenMP threads spin at barriers waiting for threads that are
not running (measured in ``bench/bench_pipeline.py --concurrent 2``). The budget is, in order:

1. the run's ``cpus`` parameter when it is above 0;
2. ``$PINSAGE_CPUS`` (an Airflow worker running N tasks at once sets it to its cores / N);
3. the CPUs the OS gives this process: its affinity mask, capped by a cgroup v2 CPU quota
   (a container limited with ``cpus: 2`` sees all the host's cores in its affinity mask).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def cpu_budget(requested: int = 0) -> int:
    """The thread budget: ``requested`` if > 0, else ``$PINSAGE_CPUS``, else :func:`available_cpus`."""
    if requested > 0:
        return requested
    env = os.environ.get("PINSAGE_CPUS", "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"PINSAGE_CPUS: expected a positive integer, got {env!r}") from None
        if value < 1:
            raise ValueError(f"PINSAGE_CPUS: expected a positive integer, got {env!r}")
        return value
    return available_cpus()


@contextlib.contextmanager
def cpu_threads(requested: int = 0):
    """Size torch's intra-op pool and numba's pool to the budget for the block, then restore them.

    Child processes (minibatch producers) inherit ``PINSAGE_CPUS``; torch's DataLoader already gives
    each of them one intra-op thread.
    """
    import numba  # here: loading numba (LLVM) costs about half a second; only callers that run kernels pay it

    n = cpu_budget(requested)
    before = torch.get_num_threads(), numba.get_num_threads(), os.environ.get("PINSAGE_CPUS")
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    os.environ["PINSAGE_CPUS"] = str(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])
        if before[2] is None:
            os.environ.pop("PINSAGE_CPUS", None)
        else:
            os.environ["PINSAGE_CPUS"] = before[2]


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or empty): CUDA when torch sees a GPU, else the CPU; ``cpu``, ``cuda``, ``cuda:N``."""
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch sees no CUDA device; use device cpu or auto")
    return torch.device(name)
