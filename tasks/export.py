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

from pinsage import pipeline
from pinsage.util.io import sha256_file
from tasks import registry
from tasks.runs import read_step_record
from tasks.step import main_for, stage_step


def run(ref: dict, model_uri: str | None = None) -> dict:
    model_uri = model_uri or read_step_record(ref, "train")["model_uri"]
    with stage_step(ref, "export") as s:
        model_uri = registry.resolve_model_uri(model_uri)
        model_dir = registry.fetch_model(model_uri, s.run.export_model)
        sha = sha256_file(model_dir / "model.pt")
        pipeline.export(s.cfg, log=s.log, model_dir=str(model_dir))
        registry.write_source(s.run.embeddings, model_uri, sha)
        s.log_artifacts(s.run.embeddings, "embeddings")
        s.result = {"embeddings_dir": str(s.run.embeddings), "model_uri": model_uri, "model_dir": str(model_dir),
                    "model_sha256": sha}
    return s.result


main = main_for(run, __doc__, "model_uri")

if __name__ == "__main__":
    raise SystemExit(main())
