"""Command line: ``python -m pinsage run --data DIR --out OUT [--seed N] [--epochs N] [--device D]``.

Also ``recommend --item ID|TITLE [-k K] --run OUT`` (related items as a table) and
``coldstart --run OUT --data DIR --out NEW`` (embed items added after training, no retraining).
"""

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
    p.add_argument("--holdout-folds", type=int, default=None,
                   help="F > 1: train on neighbourhoods walked without the pair's own context (F tables); 0: paper")
    p.add_argument("--hidden-dim", type=int, default=None)
    p.add_argument("--output-dim", type=int, default=None)
    p.add_argument("--layers", type=int, default=None, help="K, number of convolutions")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--loss", choices=["softmax", "max_margin"], default=None,
                   help="training loss: sampled softmax (default) or the paper's max-margin")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature on cosine scores")
    p.add_argument("--workers", type=int, default=None, help="minibatch producer processes")
    p.add_argument("--nproc", type=int, default=None,
                   help="data-parallel training processes (torchrun + DDP, one per GPU); default 1")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="bf16: autocast (GPU)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where the neighbourhood and export stages run: in-process, or on a Ray cluster")
    p.add_argument("--ray-address", default=None, help="Ray cluster address for --engine ray; empty: a local Ray")
    p.add_argument("--max-timestamp", type=int, default=None, help="train on interactions up to this unix time")
    p.add_argument("--protocol", choices=["tail", "last-item", "new-items"], default="tail",
                   help="evaluation pairs: tail (the paper's: each context's last 20%%, item after item), "
                        "last-item (leave-one-out, for comparison with earlier figures) or, for experiment "
                        "only, new-items (items that arrive after training, through the cold-start path)")
    p.add_argument("--vgg-weights", default=None, metavar="PATH",
                   help="local torchvision vgg16 weights file (vgg16-397923af.pth) for 4,096-d visual "
                        "features of items with an image_path; never downloaded; without it: no visual features")
    p.add_argument("--cpus", type=int, default=0,
                   help="CPU threads each stage may use; 0: $PINSAGE_CPUS, else every CPU this process may use")
    p.add_argument("--word2vec-vectors", default=None, metavar="PATH",
                   help="pretrained word vectors (word2vec format; *.bin = binary) instead of training word2vec")


def config_from_args(args, out: str):
    from .pipeline import PipelineConfig

    protocol = "tail" if args.protocol == "new-items" else args.protocol  # its runs early-stop on tail pairs
    cfg = PipelineConfig(data=args.data, out=out, max_timestamp=args.max_timestamp, engine=args.engine,
                         ray_address=args.ray_address, protocol=protocol, cpus=args.cpus).with_seed(args.seed)
    cfg.train.device = args.device
    for value, obj, name in ((args.epochs, cfg.train, "epochs"), (args.top_t, cfg.walks, "top_t"),
                             (args.walks_per_item, cfg.walks, "walks_per_item"),
                             (args.holdout_folds, cfg.walks, "holdout_folds"),
                             (args.hidden_dim, cfg.model, "hidden_dim"), (args.output_dim, cfg.model, "output_dim"),
                             (args.layers, cfg.model, "n_layers"),
                             (args.learning_rate, cfg.train, "learning_rate"),
                             (args.workers, cfg.train, "num_workers"),
                             (args.nproc, cfg.train, "nproc"), (args.precision, cfg.train, "precision"),
                             (args.loss, cfg.train, "loss"), (args.temperature, cfg.train, "temperature"),
                             (args.vgg_weights, cfg.features, "vgg_weights"),
                             (args.word2vec_vectors, cfg.features, "word2vec_vectors")):
        if value is not None:
            setattr(obj, name, value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinsage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline on one machine")
    add_config_arguments(run)
    run.add_argument("--out", required=True, help="run directory for every artifact")
    exp = sub.add_parser("experiment", help="paper Table 1 / Table 4 over several seeds, with bootstrap")
    add_config_arguments(exp)
    exp.add_argument("--out", required=True)
    exp.add_argument("--seeds", type=int, default=3)
    exp.add_argument("--t-values", default="10,20,50", help="comma-separated T values for Table 4")
    exp.add_argument("--only-seeds", default=None, metavar="I,J",
                     help="train only these seed indices and write no report (run seeds side by side, "
                          "each with --cpus set to its share; a last call without it writes the report)")
    rec = sub.add_parser("recommend", help="print the items related to one item (by id or part of a title)")
    rec.add_argument("--item", required=True, help="an item id, or (part of) a title")
    rec.add_argument("-k", type=int, default=10, help="how many related items")
    rec.add_argument("--run", metavar="OUT", required=True,
                     help="output directory of `python -m pinsage run` (or coldstart); a registered model: "
                          "`python -m tasks.recommend --model URI`")
    cold = sub.add_parser("coldstart", help="embed items added after training, without retraining")
    cold.add_argument("--run", required=True, metavar="OUT", help="the trained run directory")
    cold.add_argument("--data", required=True, help="the dataset with the added items (and any interactions)")
    cold.add_argument("--out", required=True, help="where the extended embeddings and index go")
    args = parser.parse_args(argv)
    if args.command == "recommend":  # no torch import: answers in about a second
        from .recommend import recommend_main, run_source

        return recommend_main(args.item, args.k, lambda: run_source(args.run), source=args.run,
                              out=print, err=lambda s: print(s, file=sys.stderr))

    from .dataset import DatasetError
    from .params import ParamError
    from .pipeline import run_all

    if args.command == "run":
        if args.protocol == "new-items":
            print("error: --protocol new-items is an experiment (training, then new items through the "
                  "cold-start path): python -m pinsage experiment --protocol new-items --out DIR", file=sys.stderr)
            return 2
        cfg = config_from_args(args, args.out)
        try:
            run_all(cfg, log=_log)
        except (DatasetError, ParamError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        _log(f"done: metrics in {Path(args.out) / 'metrics.json'}")
    elif args.command == "experiment":
        from .experiment import run_experiment

        cfg = config_from_args(args, args.out)
        t_values = tuple(int(t) for t in args.t_values.split(",") if t)
        try:
            if args.protocol == "new-items":
                from .newitems import run_new_items_experiment

                run_new_items_experiment(cfg, args.seeds, log=_log)
                _log(f"done: {Path(args.out) / 'new_items.md'}")
                return 0
            only = None if args.only_seeds is None else tuple(int(i) for i in args.only_seeds.split(",") if i)
            run_experiment(cfg, args.seeds, log=_log, t_values=t_values, only_seeds=only)
        except (DatasetError, ParamError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        _log(f"done: {Path(args.out) / 'experiment.md'}")
    elif args.command == "coldstart":
        from .coldstart import embed_new_items

        try:
            result = embed_new_items(args.run, args.data, args.out, log=_log)
        except (ValueError, FileNotFoundError) as err:  # DatasetError included: a bad or missing input
            print(f"error: {err}", file=sys.stderr)
            return 2
        _log(f"done: {result['n_new']} new items embedded; recommend with --run {args.out}")
    return 0
