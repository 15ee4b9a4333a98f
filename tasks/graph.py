"""Step 3, graph: the bipartite item<->context graph of the training interactions.

    python -m tasks.graph --run-dir RUN_DIR
"""

from __future__ import annotations

from pinsage import pipeline
from tasks.step import main_for, stage_step


def run(ref: dict, prepare_dir: str | None = None) -> dict:

    with stage_step(ref, "graph", handed={"prepare": prepare_dir}) as s:
        out = pipeline.graph(s.cfg, log=s.log)
        s.log_artifacts(out["graph"], "graph")
        s.result = {"graph": out["graph"]}
    return s.result


main = main_for(run, __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
