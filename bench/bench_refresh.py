"""A refresh for 1% new items against a full retrain of the same catalogue.

    python bench/bench_refresh.py                            # bundled ml-latest-small
    python bench/bench_refresh.py --data DIR --share 0.01

A seeded ``share`` of the items with interactions is held back (``split_new_items``, as the
``new-items`` protocol does); the pipeline trains on the rest (``run_all``, every default: this is
what a daily retrain costs). Then the held-back items arrive with all their interactions and the
refresh's compute path embeds them without training (``embed_new_items``: features with the fitted
transforms, walks from the new items, export with the trained network, index). Prints both wall
times, the per-part times of the refresh and the largest change of an existing item's embedding.
MLflow transfers (the refresh task downloads the champion's inputs and uploads the new version) are
not included: they depend on the tracking server, not on this code.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from pinsage.data.adapters import resolve_dataset_dir  # noqa: E402
from pinsage.data.dataset import load_dataset  # noqa: E402
from pinsage.data.split import split_new_items  # noqa: E402
from pinsage.experiments.newitems import write_dataset  # noqa: E402
from pinsage.pipeline import run_all  # noqa: E402
from pinsage.run.config import PipelineConfig  # noqa: E402
from pinsage.serve.coldstart import embed_new_items  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(REPO / "data" / "ml-latest-small"))
    p.add_argument("--share", type=float, default=0.01, help="share of the items with interactions that are new")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_refresh_") as tmp:
        tmp = Path(tmp)
        source = resolve_dataset_dir(args.data, tmp / "dataset")
        ds = load_dataset(source)
        split = split_new_items(ds.interactions, ds.has_timestamps, seed=args.seed, share=args.share)
        new = set(split.new_items["item_id"])
        base = write_dataset(tmp / "base", ds.items[~ds.items["item_id"].isin(new)], split.train, source)
        full = write_dataset(tmp / "full", ds.items, ds.interactions, source)
        cfg = PipelineConfig(data=str(base), out=str(tmp / "run")).with_seed(args.seed)
        stages = {}

        def log(line: str) -> None:
            if m := re.search(r"\[(\w+)\] done in ([\d.]+)s", line):
                stages[m.group(1)] = float(m.group(2))

        t0 = time.perf_counter()
        run_all(cfg, log=log)
        retrain = time.perf_counter() - t0
        parts = []
        t0 = time.perf_counter()
        result = embed_new_items(tmp / "run", full, tmp / "refresh", log=parts.append)
        refresh = time.perf_counter() - t0
        print(f"{ds.n_items:,} items, {len(new)} new ({100 * len(new) / ds.n_items:.1f}% of the catalogue, "
              f"{result['new_with_interactions']} with interactions), {len(split.arrivals)} of their interactions\n")
        print("| | seconds |\n|---|---:|")
        print(f"| full retrain (`run_all`, every default) | {retrain:.0f} |")
        for name, sec in stages.items():
            print(f"| &nbsp;&nbsp;{name} | {sec:.1f} |")
        print(f"| **refresh without training** (`embed_new_items`) | **{refresh:.1f}** |")
        print(f"\nrefresh / retrain = {refresh / retrain:.3f}; largest change of an existing item's embedding: "
              f"{result['max_abs_change_existing']}")
        for line in parts:
            print("  " + line)


if __name__ == "__main__":
    main()
