"""What each step of the daily retrain is handed: the DAG's wiring as data.

``dags/pinsage_daily.py`` hands these through XCom, :mod:`tasks.flow` in one process, and
``tests/orchestration/test_dag.py`` checks that the DAG's edges are exactly these. Standard library
only: the DAG file imports it while it is parsed.
"""

from __future__ import annotations

# step -> {keyword argument of tasks.<step>.run: (the upstream step whose result holds it, its key there)}
HANDED: dict[str, dict[str, tuple[str, str]]] = {
    "features": {"prepare_dir": ("prepare", "prepare_dir")},
    "graph": {"prepare_dir": ("prepare", "prepare_dir")},
    "neighbors": {"graph": ("graph", "graph")},
    "train": {"features": ("features", "features"), "neighbors": ("neighbors", "neighbors")},
    "export": {"model_uri": ("train", "model_uri")},
    "index": {"embeddings_dir": ("export", "embeddings_dir"), "model_uri": ("export", "model_uri"),
              "model_sha256": ("export", "model_sha256")},
    "evaluate": {"embeddings_dir": ("index", "embeddings_dir"), "index_dir": ("index", "index_dir")},
    "register": {"model_uri": ("index", "model_uri"), "embeddings_dir": ("index", "embeddings_dir"),
                 "index_dir": ("index", "index_dir"), "metrics": ("evaluate", "metrics")},
}
ORDER = ("prepare", *HANDED)  # an order the steps can run in one after another


def upstream(step: str) -> set[str]:
    """The steps whose results ``step`` reads."""
    return {source for source, _ in HANDED[step].values()}


def handed(step: str, **results: dict) -> dict:
    """The keyword arguments of ``tasks.<step>.run`` from its upstream steps' ``results`` (step -> result)."""
    return {arg: results[source][key] for arg, (source, key) in HANDED[step].items()}
