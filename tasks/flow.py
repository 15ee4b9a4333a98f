"""The whole chain in one process, without Airflow, with the same steps and the same hand-overs.

    python -m tasks.flow --data data/ml-latest-small --run-id try1 [--epochs 2 ...]
"""

from __future__ import annotations

import argparse
import json
import logging

from tasks import evaluate, export, features, graph, index, neighbours, prepare, register, train

ORDER = ("prepare", "features", "graph", "neighbours", "train", "export", "index", "evaluate", "register")


def run_chain(params: dict, run_key: str, dag_id: str = "cli", run_type: str = "manual",
              logical_date: str | None = None, data_interval_end=None) -> dict:
    """Run every step in DAG order, handing each the references the DAG hands it."""
    ref = prepare.run(params, run_key=run_key, dag_id=dag_id, run_type=run_type,
                      logical_date=logical_date, data_interval_end=data_interval_end)
    f = features.run(ref, prepare_dir=ref["prepare_dir"])
    g = graph.run(ref, prepare_dir=ref["prepare_dir"])
    n = neighbours.run(ref, graph=g["graph"])
    t = train.run(ref, features=f["features"], neighbors=n["neighbors"])
    e = export.run(ref, model_uri=t["model_uri"])
    i = index.run(ref, embeddings_dir=e["embeddings_dir"], model_uri=e["model_uri"],
                  model_sha256=e["model_sha256"])
    m = evaluate.run(ref, embeddings_dir=e["embeddings_dir"], index_dir=i["index_dir"])
    r = register.run(ref, model_uri=i["model_uri"], embeddings_dir=i["embeddings_dir"],
                     index_dir=i["index_dir"], metrics=m["metrics"])
    return {"ref": ref, "train": t, "evaluate": m, "register": r}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-id", required=True)
    prepare.add_param_arguments(p)
    args = p.parse_args(argv)
    result = run_chain(prepare.params_from_args(args), run_key=args.run_id)
    print(json.dumps(result["register"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
