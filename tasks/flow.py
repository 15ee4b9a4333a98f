"""The whole chain in one process, without Airflow, with the same steps and the same hand-overs.

    python -m tasks.flow --data data/ml-latest-small --run-id try1 [--epochs 2 ...]

``HANDED`` is the DAG's wiring as data: what each step is handed from the results of the steps
before it, exactly as ``dags/pinsage_daily.py`` hands it through XCom.
"""

from __future__ import annotations

import argparse
import json
import logging

from tasks import evaluate, export, features, graph, index, neighbors, prepare, register, train

STEPS = {"features": features, "graph": graph, "neighbors": neighbors, "train": train, "export": export,
         "index": index, "evaluate": evaluate, "register": register}
HANDED = {
    "features": lambda d: {"prepare_dir": d["prepare"]["prepare_dir"]},
    "graph": lambda d: {"prepare_dir": d["prepare"]["prepare_dir"]},
    "neighbors": lambda d: {"graph": d["graph"]["graph"]},
    "train": lambda d: {"features": d["features"]["features"], "neighbors": d["neighbors"]["neighbors"]},
    "export": lambda d: {"model_uri": d["train"]["model_uri"]},
    "index": lambda d: {k: d["export"][k] for k in ("embeddings_dir", "model_uri", "model_sha256")},
    "evaluate": lambda d: {"embeddings_dir": d["index"]["embeddings_dir"], "index_dir": d["index"]["index_dir"]},
    "register": lambda d: {**{k: d["index"][k] for k in ("model_uri", "embeddings_dir", "index_dir")},
                           "metrics": d["evaluate"]["metrics"]},
}
ORDER = ("prepare", *STEPS)


def continue_chain(ref: dict, done: dict) -> dict:
    """Run every step of ``ORDER`` not in ``done`` (step -> its result), handing each what the DAG does."""
    done = dict(done)
    for name, step in STEPS.items():
        if name not in done:
            done[name] = step.run(ref, **HANDED[name](done))
    return done


def run_chain(params: dict, run_key: str, dag_id: str = "cli", run_type: str = "manual",
              logical_date: str | None = None, data_interval_end=None) -> dict:
    """Run every step in DAG order; returns ``{"ref": ..., step: result, ...}``."""
    ref = prepare.run(params, run_key=run_key, dag_id=dag_id, run_type=run_type,
                      logical_date=logical_date, data_interval_end=data_interval_end)
    return {"ref": ref, **continue_chain(ref, {"prepare": ref})}


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
