"""Step 2, features: per-item feature vectors (word2vec of the annotations, log degree, ...).

    python -m tasks.features --run-dir RUN_DIR
"""

from __future__ import annotations

from pathlib import Path

from . import common


def run(ref: dict, prepare_dir: str | None = None) -> dict:
    from pinsage import pipeline

    cfg = common.load_config(ref)
    common.same_path(prepare_dir or Path(cfg.out) / "prepare", Path(cfg.out) / "prepare", "prepared data")
    with common.step(ref, "features") as c:
        out = pipeline.features(cfg, log=common.stage_logger("features"))
        common.log_artifacts(c, ref["mlflow_run_id"], Path(cfg.out) / "features", "features")
    result = {"features": out["features"], "features_dir": str(Path(cfg.out) / "features")}
    common.write_step_record(ref, "features", result)
    return result


def main(argv=None) -> int:
    return common.cli_main(run, common.cli_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
