"""Command line: ``python -m pinsage run --data DIR --out OUT [--seed N] [--epochs N] [--device D]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ml-latest-small"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="dataset directory (contract format or MovieLens); default: bundled ml-latest-small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--top-t", type=int, default=None, help="T, neighbours per item")
    p.add_argument("--walks-per-item", type=int, default=None)
    p.add_argument("--hidden-dim", type=int, default=None)
    p.add_argument("--output-dim", type=int, default=None)
    p.add_argument("--layers", type=int, default=None, help="K, number of convolutions")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--workers", type=int, default=None, help="minibatch producer processes")
    p.add_argument("--max-timestamp", type=int, default=None, help="train on interactions up to this unix time")


def config_from_args(args, out: str):
    from .pipeline import PipelineConfig

    cfg = PipelineConfig(data=args.data, out=out, max_timestamp=args.max_timestamp).with_seed(args.seed)
    cfg.train.device = args.device
    for value, obj, name in ((args.epochs, cfg.train, "epochs"), (args.top_t, cfg.walks, "top_t"),
                             (args.walks_per_item, cfg.walks, "walks_per_item"),
                             (args.hidden_dim, cfg.model, "hidden_dim"), (args.output_dim, cfg.model, "output_dim"),
                             (args.layers, cfg.model, "n_layers"), (args.layers, cfg.train.sampler, "n_layers"),
                             (args.learning_rate, cfg.train, "learning_rate"),
                             (args.workers, cfg.train, "num_workers")):
        if value is not None:
            setattr(obj, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinsage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline on one machine")
    add_config_arguments(run)
    run.add_argument("--out", required=True, help="run directory for every artifact")
    args = parser.parse_args(argv)

    from .dataset import DatasetError
    from .pipeline import run_all

    if args.command == "run":
        cfg = config_from_args(args, args.out)
        try:
            run_all(cfg, log=_log)
        except DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        _log(f"done: metrics in {Path(args.out) / 'metrics.json'}")
    return 0
