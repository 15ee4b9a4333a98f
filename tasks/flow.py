"""The whole chain in one process, without Airflow, with the same steps and the same hand-overs.

    python -m tasks.flow --data data/ml-latest-small --run-id try1 [--epochs 2 ...]

What each step is handed comes from :mod:`tasks.handovers`, as in ``dags/pinsage_daily.py``.
"""

from __future__ import annotations

import argparse
import json
import logging

from tasks import evaluate, export, features, graph, index, neighbors, prepare, register, train
from tasks.handovers import ORDER, handed

STEPS = {"features": features, "graph": graph, "neighbors": neighbors, "train": train, "export": export,
         "index": index, "evaluate": evaluate, "register": register}


def continue_chain(ref: dict, done: dict) -> dict:
    """Run every step not in ``done`` (step -> its result), in order, handing each what the DAG does."""
    done = dict(done)
    for name in ORDER[1:]:
        if name not in done:
            done[name] = STEPS[name].run(ref, **handed(name, **done))
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
