"""Ray for the ``ray`` engine: a session (a cluster, or a local one), shards, worker memory.

Ray is imported only when this engine is used; ``pinsage`` itself never needs it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import numpy as np
import ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (e.g. ``ray://head:10001`` or ``auto``), or start a local
    one when ``address`` is empty; a session this call started is shut down on exit."""

    if ray.is_initialized():
        yield
        return
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def process_memory() -> dict[str, int]:
    """This process's memory in bytes from /proc/self/smaps_rollup (Linux): ``private`` pages are its
    own, ``shared`` pages are mapped from elsewhere (the object store); ``peak_rss`` is the high-water
    mark. Empty where /proc is not available."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/smaps_rollup") as fh:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh if line.endswith("kB\n")}
        out["private"] = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        out["shared"] = fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)
        with open("/proc/self/status") as fh:
            out["peak_rss"] = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))
    except (OSError, StopIteration, ValueError):
        pass
    return out


def shard_bounds(n: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges covering range(n) in ``n_shards`` near-equal pieces."""
    n_shards = max(1, min(n_shards, n)) if n else 1
    edges = np.linspace(0, n, n_shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
