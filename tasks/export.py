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

from . import common

MODEL_FILES = ("model.pt", "model_config.json")


def fetch_model(model_uri: str, dest: str | Path) -> Path:
    """Materialise model.pt + model_config.json of ``model_uri`` in ``dest`` (atomically)."""
    import mlflow

    from pinsage.io import atomic_dir

    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        local = Path(model_uri)
        if "://" not in model_uri and ":/" not in model_uri:
            for name in MODEL_FILES:
                shutil.copy2(common.require(local / name, "model file"), tmp / name)
        else:
            common.configure_mlflow()
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
                shutil.move(str(common.require(src / name, f"{model_uri}:")), tmp / name)
            shutil.rmtree(tmp / "download", ignore_errors=True)
    return dest


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` so lineage names a fixed version."""
    if model_uri.startswith("models:/") and "@" in model_uri:
        name, _, alias = model_uri[len("models:/"):].rstrip("/").partition("@")
        version = common.client().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}"
    return model_uri


def run(ref: dict, model_uri: str | None = None) -> dict:
    from pinsage import pipeline
    from pinsage.io import write_json

    cfg = common.load_config(ref)
    out = Path(cfg.out)
    model_uri = model_uri or common.read_step_record(ref, "train")["model_uri"]
    with common.step(ref, "export") as c:
        model_uri = resolve_model_uri(model_uri)
        model_dir = fetch_model(model_uri, out / "export" / "model")
        sha = common.sha256_file(model_dir / "model.pt")
        result = pipeline.export(cfg, log=common.stage_logger("export"), model_dir=str(model_dir))
        emb_dir = Path(result["embeddings_dir"])
        write_json(emb_dir / "source.json", {"model_uri": model_uri, "model_sha256": sha})
        common.log_artifacts(c, ref["mlflow_run_id"], emb_dir, "embeddings")
    result = {"embeddings_dir": str(emb_dir), "model_uri": model_uri, "model_dir": str(model_dir),
              "model_sha256": sha}
    common.write_step_record(ref, "export", result)
    return result


def main(argv=None) -> int:
    p = common.cli_parser(__doc__)
    p.add_argument("--model-uri", default=None, help="default: the checkpoint the train step logged")
    return common.cli_main(run, p, argv, model_uri=lambda a, r: a.model_uri)


if __name__ == "__main__":
    raise SystemExit(main())
