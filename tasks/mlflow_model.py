"""The registered model: a pyfunc recommender that carries the network, embeddings and faiss index.

Logged as an MLflow "model from code" (this file is the model's code; nothing is pickled), with
``pinsage/`` as its code path, and with these artifacts:

    model_dir   model.pt (state dict, loadable with weights_only=True) + model_config.json
    embeddings  part-*.parquet (item_id, embedding) + manifest.json + source.json (which model)
    index       index.faiss + ids.parquet + answers.parquet (every item's top K, precomputed with this
                index) + manifest.json (the answers' sha256) + source.json (which model, which embeddings)
    items       items.parquet: item_id, title (for display)

``predict`` takes a DataFrame with an ``item_id`` column (and an optional per-row ``k``; else the
``k`` parameter, default 10) and returns the related items, the query itself excluded::

    query_item_id  rank  item_id  title  score  error

    model = mlflow.pyfunc.load_model("models:/pinsage@champion")
    model.predict(pd.DataFrame({"item_id": ["1", "50"]}), params={"k": 5})

A bad row (an item id not in the catalogue, an empty id, k < 1) is answered with one row whose
``error`` names it (``unknown item_id 'x': not in the model's catalogue``) and null rank, item and
score; the other rows of the batch are answered. A served batch is never refused as a whole for one
stale id. The ranking itself is :class:`pinsage.serve.recommend.Catalogue` (the answer table, the
index past it), shared with the CLI and the recommender service (``python -m tasks.serve``).

Answering never runs the network, so the model's requirements name no torch: ``mlflow models serve
--env-manager virtualenv`` and ``mlflow models build-docker`` install numpy, pandas, pyarrow and faiss
only. ``model_dir`` travels with the version for what does need it (a refresh embeds new items).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from pinsage.serve.recommend import DEFAULT_K, OUTPUT_COLUMNS, Catalogue

# Distributions the model needs at load time (exact versions of this environment are pinned); no
# torch: the answer path never imports it (tests/serve/test_serve.py loads the model without it).
REQUIREMENTS = ("mlflow", "numpy", "pandas", "pyarrow", "faiss-cpu")


def answer_frame(records: list[dict]) -> pd.DataFrame:
    """Records of ``Catalogue.related`` as the signature's frame: nullable rank and score (an error
    row has neither), None (never NaN) for missing text, so JSON shows null."""
    col = {c: [r[c] for r in records] for c in OUTPUT_COLUMNS}
    return pd.DataFrame({
        "query_item_id": pd.Series(col["query_item_id"], dtype=object),
        "rank": pd.array(col["rank"], dtype="Int64"),
        "item_id": pd.Series(col["item_id"], dtype=object),
        "title": pd.Series(col["title"], dtype=object),
        "score": pd.array(col["score"], dtype="Float64"),
        "error": pd.Series(col["error"], dtype=object),
    })[OUTPUT_COLUMNS]


class PinSageRecommender(PythonModel):
    def load_context(self, context) -> None:

        art = context.artifacts
        self.catalogue = Catalogue.from_dirs(art["index"], art["embeddings"], art["items"])
        self.model_config = json.loads((Path(art["model_dir"]) / "model_config.json").read_text())

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "item_id" not in df.columns:
            raise ValueError(f"input needs an 'item_id' column, got columns {list(df.columns)}")
        default_k = (params or {}).get("k")
        default_k = DEFAULT_K if default_k is None else default_k  # k=0 is an error per row, not "default"
        ks = [default_k] * len(df)
        if "k" in df.columns:  # per-row k where given, the parameter elsewhere
            ks = [default_k if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                  for v in df["k"].tolist()]
        return answer_frame(self.catalogue.related(df["item_id"].tolist(), ks))


def signature():

    inputs = Schema([ColSpec("string", "item_id"), ColSpec("long", "k", required=False)])
    outputs = Schema([ColSpec("string", "query_item_id"), ColSpec("long", "rank", required=False),
                      ColSpec("string", "item_id", required=False), ColSpec("string", "title", required=False),
                      ColSpec("double", "score", required=False), ColSpec("string", "error", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]))


def pip_requirements() -> list[str]:
    """Exact versions of this environment (local version labels such as ``+cpu`` dropped)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def log_recommender(*, name: str, model_dir: str, embeddings_dir: str, index_dir: str, items: str,
                    example_item_id: str | None = None, model_id: str | None = None):
    """Log the recommender (into the logged model ``model_id`` when given); returns the ModelInfo.

    With ``example_item_id`` MLflow loads the logged model and predicts on that example before
    returning, so a model that cannot load or answer is never registered.
    """
    pinsage_dir = Path(__file__).resolve().parent.parent / "pinsage"
    return mlflow.pyfunc.log_model(
        name=name, python_model=str(Path(__file__).resolve()), code_paths=[str(pinsage_dir)],
        artifacts={"model_dir": model_dir, "embeddings": embeddings_dir, "index": index_dir, "items": items},
        signature=signature(), pip_requirements=pip_requirements(), model_id=model_id,
        input_example=None if example_item_id is None else pd.DataFrame({"item_id": [example_item_id]}))


set_model(PinSageRecommender())
