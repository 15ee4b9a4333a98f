"""Command line: ``python -m pinsage run --data DIR --out OUT [--seed N] [--epochs N] [--device D]``.

Also ``recommend --item ID|TITLE [-k K] --run OUT`` (related items as a table), ``serve --run OUT``
(the recommender's HTTP service over a run directory; a registered model's alias, followed:
``python -m tasks.serve --model models:/NAME@champion``) and ``coldstart --run OUT --data DIR --out
NEW`` (embed items added after training, no retraining).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pinsage.data.errors import DatasetError
from pinsage.run.params import BY_KEY, ParamError, add_arguments, config_from_params, values_from_args

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "ml-latest-small"


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def config_from_args(args, out: str):
    """The run's config from the table's flags (``pinsage.run.params``); relative paths stay as given."""
    values = values_from_args(args)
    if values.get("protocol") == "new-items":  # an experiment protocol: its runs early-stop on tail pairs
        values["protocol"] = "tail"
    return config_from_params(values, out, data=values.get("data") or str(DEFAULT_DATA))


def _error(err) -> str:
    """A refused parameter as the command line names it (``--epochs``), else the dotted key."""
    p = BY_KEY.get(getattr(err, "param", None))
    if p is not None and p.cli:
        return f"error: {p.flag} ({p.key}): {err.message}"
    return f"error: {err}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinsage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline on one machine")
    add_arguments(run)
    run.add_argument("--out", required=True, help="run directory for every artifact")
    exp = sub.add_parser("experiment", help="paper Table 1 / Table 4 over several seeds, with bootstrap")
    add_arguments(exp, extra_choices={"protocol": ("new-items",)})
    exp.add_argument("--out", required=True)
    exp.add_argument("--seeds", type=int, default=3)
    exp.add_argument("--t-values", default="10,20,50", help="comma-separated T values for Table 4")
    exp.add_argument("--rows", default=None, metavar="NAME;NAME",
                     help="only these Table 1 rows (';'-separated names, e.g. 'pinsage;no convolution (K=0)'); "
                          "default: every row")
    exp.add_argument("--only-seeds", default=None, metavar="I,J",
                     help="train only these seed indices and write no report (run seeds side by side, "
                          "each with --cpus set to its share; a last call without it writes the report)")
    rec = sub.add_parser("recommend", help="print the items related to one item (by id or part of a title)")
    rec.add_argument("--item", required=True, help="an item id, or (part of) a title")
    rec.add_argument("-k", type=int, default=10, help="how many related items")
    rec.add_argument("--run", metavar="OUT", required=True,
                     help="output directory of `python -m pinsage run` (or coldstart); a registered model: "
                          "`python -m tasks.recommend --model URI`")
    srv = sub.add_parser("serve", help="answer related items over HTTP from a run directory")
    srv.add_argument("--run", metavar="OUT", required=True,
                     help="output directory of `python -m pinsage run` (or coldstart); a registered model's "
                          "alias, followed: `python -m tasks.serve --model models:/NAME@champion`")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    cold = sub.add_parser("coldstart", help="embed items added after training, without retraining")
    cold.add_argument("--run", required=True, metavar="OUT", help="the trained run directory")
    cold.add_argument("--data", required=True, help="the dataset with the added items (and any interactions)")
    cold.add_argument("--out", required=True, help="where the extended embeddings and index go")
    args = parser.parse_args(argv)
    # Each command imports its own machinery here, so the cheap ones stay cheap: recommend and serve
    # never import torch (serve also needs the service's starlette and uvicorn), the rest do.
    if args.command == "recommend":  # no torch import: answers in about a second
        from pinsage.serve.recommend import recommend_main, run_source

        return recommend_main(args.item, args.k, lambda: run_source(args.run), source=args.run,
                              out=print, err=lambda s: print(s, file=sys.stderr))

    if args.command == "serve":  # no torch import either
        from pinsage.serve.http import Loaded, Serving, create_app, run_server
        from pinsage.serve.recommend import Catalogue

        serving = Serving()
        serving.swap(Loaded(Catalogue.from_run(args.run), model=str(args.run), version="run", source=str(args.run)))
        run_server(create_app(serving), args.host, args.port)
        return 0

    if args.command == "run" and args.protocol == "new-items":
        print("error: --protocol new-items is an experiment (training, then new items through the "
              "cold-start path): python -m pinsage experiment --protocol new-items --out DIR", file=sys.stderr)
        return 2
    if args.command in ("run", "experiment"):
        try:
            cfg = config_from_args(args, args.out)
            if args.command == "run":
                from pinsage.pipeline import run_all

                run_all(cfg, log=_log)
                _log(f"done: metrics in {Path(args.out) / 'metrics.json'}")
            elif args.protocol == "new-items":
                from pinsage.experiments.newitems import run_new_items_experiment

                only = None if args.only_seeds is None else tuple(int(i) for i in args.only_seeds.split(",") if i)
                if run_new_items_experiment(cfg, args.seeds, log=_log, only_seeds=only) is None:
                    _log(f"done: seeds {args.only_seeds}; run again without --only-seeds to render")
                    return 0
                _log(f"done: {Path(args.out) / 'new_items.md'}")
            else:
                from pinsage.experiments.runner import run_experiment, table1_rows

                only = None if args.only_seeds is None else tuple(int(i) for i in args.only_seeds.split(",") if i)
                run_experiment(cfg, args.seeds, log=_log, t_values=tuple(int(t) for t in args.t_values.split(",") if t),
                               only_seeds=only, variants=table1_rows(args.rows))
                _log(f"done: {Path(args.out) / 'experiment.md'}")
        except ParamError as err:
            print(_error(err), file=sys.stderr)
            return 2
        except DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "coldstart":
        from pinsage.serve.coldstart import embed_new_items

        try:
            result = embed_new_items(args.run, args.data, args.out, log=_log)
        except (ValueError, FileNotFoundError) as err:  # DatasetError included: a bad or missing input
            print(f"error: {err}", file=sys.stderr)
            return 2
        _log(f"done: {result['n_new']} new items embedded; recommend with --run {args.out}")
    return 0
