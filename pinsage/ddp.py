"""One data-parallel training process, started by torchrun (see ``pinsage.model.distributed``).

    python -m torch.distributed.run --standalone --nproc_per_node N -m pinsage.ddp --config CFG.json

``CFG.json`` is the run's ``PipelineConfig`` (``pipeline.train`` writes it to ``train/ddp_config.json``).
"""

from __future__ import annotations

import argparse
import json
import time

from pinsage.model.distributed import group_from_env
from pinsage.pipeline import train
from pinsage.run.config import PipelineConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinsage.ddp", description=__doc__)
    parser.add_argument("--config", required=True, help="the run's PipelineConfig as JSON")
    args = parser.parse_args(argv)
    with open(args.config) as f:
        cfg = PipelineConfig.from_dict(json.load(f))
    group = group_from_env()

    def log(message: str) -> None:
        if group.is_main:  # one copy of each line, not one per process
            print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    train(cfg, log=log, group=group)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
