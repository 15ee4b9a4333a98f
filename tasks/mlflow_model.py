"""The registered model: a pyfunc recommender that carries the network, embeddings and faiss index.

Logged as an MLflow "model from code" (this file is the model's code; nothing is pickled), with
``pinsage/`` as its code path, and with these artifacts:

    model_dir   model.pt (state dict, loadable with weights_only=True) + model_config.json
    embeddings  part-*.parquet (item_id, embedding) + manifest.json + source.json (which model)
    index       index.faiss + ids.parquet + manifest.json + source.json (which model, which embeddings)
    items       items.parquet: item_id, title (for display)

``predict`` takes a DataFrame with an ``item_id`` column (and an optional per-row ``k``; else the
``k`` parameter, default 10) and returns the related items, the query itself excluded::

    query_item_id  rank  item_id  title  score

    model = mlflow.pyfunc.load_model("models:/pinsage@champion")
    model.predict(pd.DataFrame({"item_id": ["1", "50"]}), params={"k": 5})

An item id that is not in the catalogue raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

DEFAULT_K = 10
OUTPUT_COLUMNS = ["query_item_id", "rank", "item_id", "title", "score"]
# Distributions the model needs at load time (exact versions of this environment are pinned).
REQUIREMENTS = ("mlflow", "numpy", "pandas", "pyarrow", "faiss-cpu", "torch")


class PinSageRecommender(PythonModel):
    def load_context(self, context) -> None:
        import pyarrow.parquet as pq

        from pinsage.embeddings import read_embeddings
        from pinsage.index import load_index

        art = context.artifacts
        self.index, self.index_ids = load_index(art["index"])
        ids, self.embeddings = read_embeddings(art["embeddings"])  # (N,), (N, D)
        self.row_of = pd.Index(ids)
        items = pq.read_table(art["items"], columns=["item_id", "title"]).to_pandas()
        self.titles = pd.Series(items["title"].to_numpy(), index=items["item_id"].astype(str).to_numpy())
        self.model_config = json.loads((Path(art["model_dir"]) / "model_config.json").read_text())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pinsage.index import search

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "item_id" not in df.columns:
            raise ValueError("input needs an 'item_id' column")
        default_k = int((params or {}).get("k") or DEFAULT_K)
        queries = df["item_id"].astype(str).str.strip().to_numpy()
        ks = np.full(len(df), default_k, dtype=np.int64)
        if "k" in df.columns:
            col = pd.to_numeric(df["k"], errors="coerce").to_numpy(dtype=float)
            ks = np.where(np.isnan(col), ks, col).astype(np.int64)
        if len(df) == 0:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(OUTPUT_COLUMNS, ["str", "int64", "str", "str", "float64"])})
        if (ks < 1).any():
            raise ValueError("k must be >= 1")
        rows = self.row_of.get_indexer(queries)
        if (rows < 0).any():
            unknown = list(dict.fromkeys(queries[rows < 0]))[:10]
            raise ValueError(f"unknown item_id(s) {unknown}: not in the model's catalogue")
        kmax = int(min(ks.max(), max(1, self.index.ntotal - 1)))
        ids, scores = search(self.index, self.index_ids, self.embeddings[rows], kmax, exclude_ids=queries)
        out = []
        for q, (query, k) in enumerate(zip(queries, ks)):
            keep = ids[q][:k] != ""
            n = int(keep.sum())
            related = ids[q][:k][keep]
            out.append(pd.DataFrame({
                "query_item_id": [query] * n, "rank": np.arange(1, n + 1, dtype=np.int64), "item_id": related,
                "title": self.titles.reindex(related).astype(object).where(lambda s: s.notna(), None).to_numpy(),
                "score": scores[q][:k][keep].astype(np.float64)}))
        return pd.concat(out, ignore_index=True)[OUTPUT_COLUMNS]


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "item_id"), ColSpec("long", "k", required=False)])
    outputs = Schema([ColSpec("string", "query_item_id"), ColSpec("long", "rank"), ColSpec("string", "item_id"),
                      ColSpec("string", "title", required=False), ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]))


def pip_requirements() -> list[str]:
    """Exact versions of this environment (local version labels such as ``+cpu`` dropped)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def log_recommender(*, name: str, model_dir: str, embeddings_dir: str, index_dir: str, items: str,
                    example_item_id: str | None = None):
    """Log the recommender into the active MLflow run; returns the ModelInfo.

    With ``example_item_id`` MLflow loads the logged model and predicts on that example before
    returning, so a model that cannot load or answer is never registered.
    """
    pinsage_dir = Path(__file__).resolve().parent.parent / "pinsage"
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(Path(__file__).resolve()), code_paths=[str(pinsage_dir)],
        artifacts={"model_dir": model_dir, "embeddings": embeddings_dir, "index": index_dir, "items": items},
        signature=signature(), pip_requirements=pip_requirements(),
        input_example=None if example_item_id is None else pd.DataFrame({"item_id": [example_item_id]}))


set_model(PinSageRecommender())
