"""Pipeline steps for orchestration: one module per step, no Airflow import anywhere in here.

Every step is a plain function ``run(ref, ...) -> dict`` that

* reads its configuration from the run reference ``ref`` (a small dict: run directory, config path,
  MLflow run id; written by :mod:`tasks.prepare` as ``<run_dir>/run.json``) and its inputs by path
  or URI,
* calls :mod:`pinsage` to do the work, writing its outputs atomically under the run directory,
* logs those outputs to the run's MLflow run,
* returns small references (paths, URIs, ids) -- never data -- and records them in
  ``<run_dir>/steps/<step>.json`` so the next step also runs from the command line.

Steps are idempotent: re-running one recomputes the same outputs (training resumes from its
checkpoint) and only ever replaces an artifact by a complete new one.

    python -m tasks.prepare --data data/ml-latest-small --run-id try1 --epochs 2
    python -m tasks.features   --run-dir .pinsage/runs/cli/try1
    python -m tasks.graph      --run-dir .pinsage/runs/cli/try1
    python -m tasks.neighbors  --run-dir .pinsage/runs/cli/try1
    python -m tasks.train      --run-dir .pinsage/runs/cli/try1
    python -m tasks.export     --run-dir .pinsage/runs/cli/try1 [--model-uri URI]
    python -m tasks.index      --run-dir .pinsage/runs/cli/try1
    python -m tasks.evaluate   --run-dir .pinsage/runs/cli/try1
    python -m tasks.register   --run-dir .pinsage/runs/cli/try1

or the whole chain in one process: ``python -m tasks.flow --data ... --run-id ...``.
"""
