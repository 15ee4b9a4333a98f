"""The run directory: the one definition of where each stage's outputs live.

    dataset/      contract-format copy when the input needed an adapter (MovieLens)
    config.json   the run's PipelineConfig
    prepare/      items.parquet, train.parquet, valid.parquet, test.parquet, summary.json
    features/     features.parquet, features_manifest.json, word_vectors.bin (fitted, for cold start)
    graph/        graph.npz
    neighbors/    neighbors.parquet, visits.npz
    train/        last.pt (resumable checkpoint), model.pt, model_config.json, history.json
    export/model/ the network the embeddings were exported with, when it was fetched from elsewhere
    embeddings/   part-*.parquet, manifest.json (+ source.json: the model URI, under orchestration)
    index/        index.faiss, ids.parquet, manifest.json
    metrics.json, metrics.md, ranks.parquet (per-pair ranks of every method), report.html
    coldstart.json  only in a catalogue extended without retraining (coldstart, refresh)

Stages, serving, the report, the experiments and the orchestration steps all take a :class:`RunDir`
instead of joining paths themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

SPLITS = ("train", "valid", "test")


class RunDir:
    """Paths (and small readers) of one run directory ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # -- directories, one per stage ------------------------------------------------------------
    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def prepare(self) -> Path:
        return self.root / "prepare"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def graph(self) -> Path:
        return self.root / "graph"

    @property
    def neighbors(self) -> Path:
        return self.root / "neighbors"

    @property
    def checkpoint(self) -> Path:
        """``train/``: the training stage's output (checkpoints, the kept model, its history); not the
        training split, which is ``split("train")``."""
        return self.root / "train"

    @property
    def export_model(self) -> Path:
        return self.root / "export" / "model"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def index(self) -> Path:
        return self.root / "index"

    # -- files -----------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def items(self) -> Path:
        return self.prepare / "items.parquet"

    def split(self, name: str) -> Path:
        """``prepare/{train,valid,test}.parquet``: training interactions or evaluation pairs."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.prepare / f"{name}.parquet"

    @property
    def summary_file(self) -> Path:
        return self.prepare / "summary.json"

    @property
    def features_table(self) -> Path:
        return self.features / "features.parquet"

    @property
    def features_manifest(self) -> Path:
        return self.features / "features_manifest.json"

    @property
    def word_vectors(self) -> Path:
        return self.features / "word_vectors.bin"

    @property
    def graph_file(self) -> Path:
        return self.graph / "graph.npz"

    @property
    def neighbors_table(self) -> Path:
        return self.neighbors / "neighbors.parquet"

    @property
    def visits(self) -> Path:
        return self.neighbors / "visits.npz"

    @property
    def history(self) -> Path:
        return self.checkpoint / "history.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def metrics_table(self) -> Path:
        return self.root / "metrics.md"

    @property
    def ranks(self) -> Path:
        return self.root / "ranks.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def coldstart(self) -> Path:
        return self.root / "coldstart.json"

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the run directory, as artifact paths name it."""
        return Path(path).relative_to(self.root).as_posix()

    # -- readers -----------------------------------------------------------------------------------
    def read_json(self, path: Path) -> dict | None:
        """A JSON file of the run, or None where it is missing."""
        return json.loads(path.read_text()) if path.exists() else None

    def summary(self) -> dict:
        return json.loads(self.summary_file.read_text())

    def config_dict(self) -> dict:
        if not self.config.exists():
            raise FileNotFoundError(f"{self.root} is not a run directory: config.json is missing")
        return json.loads(self.config.read_text())

    def item_ids(self) -> np.ndarray:
        """(N,) str catalogue ids in catalogue (row) order."""

        return pq.read_table(self.items, columns=["item_id"]).column("item_id") \
            .to_numpy(zero_copy_only=False).astype(str)

    def pairs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(P,) query and (P,) target catalogue indices of the ``valid`` or ``test`` pairs."""

        t = pq.read_table(self.split(name), columns=["query", "target"])
        return t.column("query").to_numpy(), t.column("target").to_numpy()

    def interactions(self, columns=("context", "item", "weight", "order")):
        """The training interactions (pandas), grouped by context in engagement order."""

        return pq.read_table(self.split("train"), columns=list(columns)).to_pandas()

    def ranks_table(self, split: str = "test"):
        """Per-pair ranks of every method on the ``test`` or ``valid`` pairs (pandas): what paired
        bootstrap comparisons resample."""

        table = pq.read_table(self.ranks).to_pandas()
        return table[table["split"] == split].reset_index(drop=True)

    def model_dir(self) -> Path:
        """The network the run's embeddings come from: ``export/model`` when the export fetched one
        (orchestration), else ``train/``."""
        for d in (self.export_model, self.checkpoint):
            if (d / "model.pt").exists() and (d / "model_config.json").exists():
                return d
        raise FileNotFoundError(f"{self.root}: no trained model (train/model.pt or export/model/model.pt)")
