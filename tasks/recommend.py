"""The registered recommender as a source for ``python -m pinsage recommend --model URI``.

The library (``pinsage/``) never talks to MLflow; this is the one place the CLI's ``--model`` path
reaches the registry. It is its own module, not part of ``tasks/mlflow_model.py``, because importing
that model-from-code file registers it with ``set_model``.
"""

from __future__ import annotations

import mlflow
import pandas as pd


def registered_source(model_uri: str, tracking_uri: str | None = None):
    """``(Catalogue, answer)`` of a registered PinSage recommender.

    ``answer(item_ids, k)`` goes through the model's own ``predict``, exactly as the server answers.
    """
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    catalogue = getattr(model.unwrap_python_model(), "catalogue", None)
    if catalogue is None:
        raise ValueError(f"{model_uri} is not a PinSage recommender")

    def answer(item_ids, k: int) -> pd.DataFrame:
        return model.predict(pd.DataFrame({"item_id": list(item_ids)}), params={"k": int(k)})

    return catalogue, answer
