"""Step 6, export: embed every catalogue item with the model it is handed (MapReduce-style export).

The model is named by a URI, never taken from "whatever is in the run directory":

    runs:/<run_id>/checkpoint         the checkpoint the train step logged (what the DAG hands over)
    models:/pinsage/3, models:/pinsage@champion
                                      a registered version (its ``model_dir`` artifact)
    /a/local/dir                      a directory with model.pt + model_config.json

It is fetched into ``<run_dir>/export/model/``; the embeddings get a ``source.json`` naming the model
URI and the sha256 of its ``model.pt``, which the index step and the registration check.

    python -m tasks.export --run-dir RUN_DIR [--model-uri URI]
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks import tracking
from tasks.provenance import sha256_file
from tasks.runs import read_step_record, require
from tasks.step import main_for, stage_step

MODEL_FILES = ("model.pt", "model_config.json")


def fetch_model(model_uri: str, dest: str | Path) -> Path:
    """Materialise model.pt + model_config.json of ``model_uri`` in ``dest`` (atomically)."""
    import mlflow

    from pinsage.util.io import atomic_dir

    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        local = Path(model_uri)
        if "://" not in model_uri and ":/" not in model_uri:
            for name in MODEL_FILES:
                shutil.copy2(require(local / name, "model file"), tmp / name)
        else:
            tracking.configure_mlflow()
            if model_uri.startswith("models:/"):  # a registered recommender: its model_dir artifact only
                from mlflow.models import Model

                uri = model_uri.rstrip("/")
                mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/MLmodel",
                                                              dst_path=str(tmp / "meta"))
                arts = Model.load(mlmodel).flavors.get("python_function", {}).get("artifacts", {})
                if "model_dir" not in arts:
                    raise ValueError(f"{model_uri} is not a PinSage recommender (no model_dir artifact)")
                src = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{arts['model_dir']['path']}",
                                                               dst_path=str(tmp / "download")))
                shutil.rmtree(tmp / "meta", ignore_errors=True)
            else:
                src = tmp / "download"
                for name in MODEL_FILES:
                    mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{name}",
                                                        dst_path=str(src))
            for name in MODEL_FILES:
                shutil.move(str(require(src / name, f"{model_uri}:")), tmp / name)
            shutil.rmtree(tmp / "download", ignore_errors=True)
    return dest


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` so lineage names a fixed version."""
    if model_uri.startswith("models:/") and "@" in model_uri:
        name, _, alias = model_uri[len("models:/"):].rstrip("/").partition("@")
        version = tracking.client().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}"
    return model_uri


def run(ref: dict, model_uri: str | None = None) -> dict:
    from pinsage import pipeline
    from pinsage.util.io import write_json

    model_uri = model_uri or read_step_record(ref, "train")["model_uri"]
    with stage_step(ref, "export") as s:
        model_uri = resolve_model_uri(model_uri)
        model_dir = fetch_model(model_uri, s.run.export_model)
        sha = sha256_file(model_dir / "model.pt")
        pipeline.export(s.cfg, log=s.log, model_dir=str(model_dir))
        write_json(s.run.embeddings / "source.json", {"model_uri": model_uri, "model_sha256": sha})
        s.log_artifacts(s.run.embeddings, "embeddings")
        s.result = {"embeddings_dir": str(s.run.embeddings), "model_uri": model_uri, "model_dir": str(model_dir),
                    "model_sha256": sha}
    return s.result


main = main_for(run, __doc__, "model_uri")

if __name__ == "__main__":
    raise SystemExit(main())
