"""Related items from a registered recommender: ``python -m tasks.recommend --model URI --item X [-k 10]``.

The same table as ``python -m pinsage recommend --run OUT``, answered by the model's own ``predict``.
The library (``pinsage/``) never talks to MLflow; this is where the command line reaches the registry.
It is its own module, not part of ``tasks/mlflow_model.py``, because importing that model-from-code
file registers it with ``set_model``.
"""

from __future__ import annotations

import argparse
import sys

import mlflow
import pandas as pd

from pinsage.serve.recommend import recommend_main


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

    def answer(item_ids, k: int) -> list[dict]:
        frame = model.predict(pd.DataFrame({"item_id": list(item_ids)}), params={"k": int(k)})
        return frame.astype(object).where(frame.notna(), None).to_dict("records")

    return catalogue, answer


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="python -m tasks.recommend", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="URI", help="an MLflow model, e.g. models:/pinsage@champion")
    p.add_argument("--item", required=True, help="an item id, or (part of) a title")
    p.add_argument("-k", type=int, default=10, help="how many related items")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    args = p.parse_args(argv)
    return recommend_main(args.item, args.k, lambda: registered_source(args.model, args.tracking_uri),
                          source=args.model, out=print, err=lambda s: print(s, file=sys.stderr))


if __name__ == "__main__":
    raise SystemExit(main())
