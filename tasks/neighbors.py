"""Step 4, neighbors: random walks with restart from every item; top-T importance neighbours.

    python -m tasks.neighbors --run-dir RUN_DIR [--graph PATH]
"""

from __future__ import annotations

from pinsage import pipeline
from tasks.step import main_for, stage_step


def run(ref: dict, graph: str | None = None) -> dict:

    with stage_step(ref, "neighbors", handed={"graph_file": graph}) as s:
        out = pipeline.neighbors(s.cfg, log=s.log)
        s.log_artifacts(s.run.neighbors, "neighbors")
        s.result = {"neighbors": out["neighbors"], "visits": out["visits"]}
    return s.result


main = main_for(run, __doc__, "graph")

if __name__ == "__main__":
    raise SystemExit(main())
