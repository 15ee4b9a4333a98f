"""Where the heavy stages run: ``local`` (in-process) or ``ray`` (sharded over a Ray cluster).

Both engines give the same outputs (tests/engines/test_ray_engine.py); Ray is imported only for ``ray``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:  # only a type here: a Ray worker importing an engine module needs no torch or faiss
    from pinsage.run.config import PipelineConfig

# Each engine's modules are imported where that engine is chosen, not above: Ray workers import this
# package, a walk worker needs no torch (the export) and an export worker no numba (the walks).

ENGINES = ("local", "ray")
Log = Callable[[str], None]


@contextlib.contextmanager
def walk_engine(cfg: PipelineConfig, log: Log) -> Iterator[Callable]:
    """Yields ``walk(graph, hard_negative_depth, label) -> (Neighbors, VisitTable)`` on ``cfg.engine``."""
    if cfg.engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {cfg.engine!r}")
    if cfg.engine == "ray":  # imports here: see the note above ENGINES
        from pinsage.engines.ray_session import ray_session
        from pinsage.engines.ray_walks import random_walk_neighbors_ray

        with ray_session(cfg.ray_address or None):
            def walk(graph, depth, label):
                stats: dict = {}
                out = random_walk_neighbors_ray(graph, cfg.walks, hard_negative_depth=depth, stats=stats)
                log(f"{label}: engine ray ({cfg.ray_address or 'local cluster'}), {stats['n_shards']} tasks, "
                    f"graph shared zero-copy: {stats['zero_copy']}")
                return out
            yield walk
        return
    from pinsage.graph.walks import random_walk_neighbors, walk_visits  # numba: only when walking here

    def walk(graph, depth, label):  # the in-process counter, sliced to show progress
        return random_walk_neighbors(
            graph, cfg.walks, hard_negative_depth=depth,
            count_visits=lambda gr, m, wc: walk_visits(gr, np.arange(gr.n_items), m, wc, label=label))
    yield walk


def export_on_engine(cfg: PipelineConfig, model, features: np.ndarray, neighbors, log: Log) -> np.ndarray:
    """(N, D) embeddings of every item: the local layer-by-layer export, or map / join / reduce on Ray."""
    if cfg.engine == "ray":  # imports here: see the note above ENGINES
        from pinsage.engines.ray_export import export_embeddings_ray
        from pinsage.engines.ray_session import ray_session

        with ray_session(cfg.ray_address or None):
            emb = export_embeddings_ray(model, features, neighbors)
        log(f"export: engine ray ({cfg.ray_address or 'local cluster'}), map / join / reduce per layer")
        return emb
    from pinsage.export.embed import export_embeddings  # torch: only when exporting here

    return export_embeddings(model, features, neighbors, progress=True)
