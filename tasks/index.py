"""Step 7, index: the faiss index over the embeddings of the model it is handed.

The handed ``model_uri`` / ``model_sha256`` must be the model the embeddings were exported with
(their ``source.json``); the index records the same in its own ``source.json``, with the sha256 of
its answer table (every item's top K, built with the index: ``pinsage.export.answers``).

    python -m tasks.index --run-dir RUN_DIR
"""

from __future__ import annotations

from pinsage import pipeline
from pinsage.export.index import answers_sha256
from pinsage.util.io import sha256_file
from tasks import registry
from tasks.runs import read_step_record
from tasks.step import main_for, stage_step


def run(ref: dict, embeddings_dir: str | None = None, model_uri: str | None = None,
        model_sha256: str | None = None) -> dict:
    if embeddings_dir is None or model_uri is None or model_sha256 is None:
        rec = read_step_record(ref, "export")
        embeddings_dir = embeddings_dir or rec["embeddings_dir"]
        model_uri, model_sha256 = model_uri or rec["model_uri"], model_sha256 or rec["model_sha256"]

    def same_model(s) -> None:
        registry.check_source(s.run.embeddings, "embeddings", model_uri, model_sha256)

    with stage_step(ref, "index", handed={"embeddings": embeddings_dir}, check=same_model) as s:
        emb = s.run.embeddings
        pipeline.index(s.cfg, log=s.log)
        registry.write_source(s.run.index, model_uri, model_sha256,
                              embeddings_manifest_sha256=sha256_file(emb / "manifest.json"),
                              answers_sha256=answers_sha256(s.run.index))
        s.log_artifacts(s.run.index, "index")
        s.result = {"index_dir": str(s.run.index), "embeddings_dir": str(emb), "model_uri": model_uri,
                    "model_sha256": model_sha256}
    return s.result


main = main_for(run, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
