"""Step 7, index: the faiss index over the embeddings of the model it is handed.

The handed ``model_uri`` / ``model_sha256`` must be the model the embeddings were exported with
(their ``source.json``); the index records the same in its own ``source.json``.

    python -m tasks.index --run-dir RUN_DIR
"""

from __future__ import annotations

import json
from pathlib import Path

from . import common


def run(ref: dict, embeddings_dir: str | None = None, model_uri: str | None = None,
        model_sha256: str | None = None) -> dict:
    from pinsage import pipeline
    from pinsage.io import write_json

    cfg = common.load_config(ref)
    out = Path(cfg.out)
    if embeddings_dir is None or model_uri is None or model_sha256 is None:
        rec = common.read_step_record(ref, "export")
        embeddings_dir = embeddings_dir or rec["embeddings_dir"]
        model_uri, model_sha256 = model_uri or rec["model_uri"], model_sha256 or rec["model_sha256"]
    emb = common.same_path(embeddings_dir, out / "embeddings", "embeddings")
    source = json.loads(common.require(emb / "source.json", "embeddings source").read_text())
    if (source["model_uri"], source["model_sha256"]) != (model_uri, model_sha256):
        raise ValueError(f"the embeddings in {emb} come from {source}, not from the handed model "
                         f"{model_uri} (sha256 {model_sha256}); re-run the export with that model")
    with common.step(ref, "index") as c:
        result = pipeline.index(cfg, log=common.stage_logger("index"))
        index_dir = Path(result["index_dir"])
        write_json(index_dir / "source.json", {
            "model_uri": model_uri, "model_sha256": model_sha256,
            "embeddings_manifest_sha256": common.sha256_file(emb / "manifest.json")})
        common.log_artifacts(c, ref["mlflow_run_id"], index_dir, "index")
    result = {"index_dir": str(index_dir), "embeddings_dir": str(emb), "model_uri": model_uri,
              "model_sha256": model_sha256}
    common.write_step_record(ref, "index", result)
    return result


def main(argv=None) -> int:
    return common.cli_main(run, common.cli_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
