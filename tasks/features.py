"""Step 2, features: per-item feature vectors (word2vec of the annotations, log degree, ...).

    python -m tasks.features --run-dir RUN_DIR
"""

from __future__ import annotations

from pinsage import pipeline
from tasks.step import main_for, stage_step


def run(ref: dict, prepare_dir: str | None = None) -> dict:

    with stage_step(ref, "features", handed={"prepare": prepare_dir}) as s:
        out = pipeline.features(s.cfg, log=s.log)
        s.log_artifacts(s.run.features, "features")
        s.result = {"features": out["features"], "features_dir": str(s.run.features)}
    return s.result


main = main_for(run, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
