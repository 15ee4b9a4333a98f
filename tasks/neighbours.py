"""Step 4, neighbours: random walks with restart from every item; top-T importance neighbours.

    python -m tasks.neighbours --run-dir RUN_DIR [--graph PATH]
"""

from __future__ import annotations

from pathlib import Path

from . import common


def run(ref: dict, graph: str | None = None) -> dict:
    from pinsage import pipeline

    cfg = common.load_config(ref)
    common.same_path(graph or Path(cfg.out) / "graph" / "graph.npz", Path(cfg.out) / "graph" / "graph.npz",
                     "graph")
    with common.step(ref, "neighbours") as c:
        out = pipeline.neighbors(cfg, log=common.stage_logger("neighbours"))
        common.log_artifacts(c, ref["mlflow_run_id"], Path(cfg.out) / "neighbors", "neighbors")
    result = {"neighbors": out["neighbors"], "visits": out["visits"]}
    common.write_step_record(ref, "neighbours", result)
    return result


def main(argv=None) -> int:
    p = common.cli_parser(__doc__)
    p.add_argument("--graph", default=None)
    return common.cli_main(run, p, argv, graph=lambda a, r: a.graph)


if __name__ == "__main__":
    raise SystemExit(main())
