"""Step 3, graph: the bipartite item<->context graph of the training interactions.

    python -m tasks.graph --run-dir RUN_DIR
"""

from __future__ import annotations

from pathlib import Path

from . import common


def run(ref: dict, prepare_dir: str | None = None) -> dict:
    from pinsage import pipeline

    cfg = common.load_config(ref)
    common.same_path(prepare_dir or Path(cfg.out) / "prepare", Path(cfg.out) / "prepare", "prepared data")
    with common.step(ref, "graph") as c:
        out = pipeline.graph(cfg, log=common.stage_logger("graph"))
        common.log_artifacts(c, ref["mlflow_run_id"], out["graph"], "graph")
    result = {"graph": out["graph"]}
    common.write_step_record(ref, "graph", result)
    return result


def main(argv=None) -> int:
    return common.cli_main(run, common.cli_parser(__doc__), argv)


if __name__ == "__main__":
    raise SystemExit(main())
