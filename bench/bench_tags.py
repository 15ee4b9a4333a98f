"""How much the held-out future leaked into item text through MovieLens tags, and what the rule drops.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python3 bench/bench_tags.py [--data data/ml-latest-small]
        [--seed 0] [--protocol tail]

Converts ``--data`` (a MovieLens directory), splits it as ``prepare`` does, and prints: the tags; those
:func:`pinsage.data.tags.allowed_tags` drops (on a held-out (user, movie), or written at or after the
user's first held-out interaction); and the validation / test targets whose text, before the fix (every
tag baked into ``text``), held a tag their own user wrote on them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):  # run as a script from anywhere: make `pinsage` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pinsage.data.adapters import resolve_dataset_dir  # noqa: E402
from pinsage.data.dataset import load_dataset  # noqa: E402
from pinsage.data.split import split_interactions  # noqa: E402
from pinsage.data.tags import allowed_tags  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", default="tail")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_dataset(resolve_dataset_dir(args.data, tmp))
    if ds.tags is None:
        print(f"{args.data}: no tags")
        return 0
    split = split_interactions(ds.interactions, ds.has_timestamps, seed=args.seed, protocol=args.protocol)
    tags, held = ds.tags, split.heldout
    kept = allowed_tags(tags, held)
    pair = pd.MultiIndex.from_frame(tags[["context_id", "item_id"]])
    on_held = pair.isin(pd.MultiIndex.from_frame(held[["context_id", "item_id"]]))
    tagged = set(zip(tags["context_id"], tags["item_id"]))
    print(f"data {args.data}, seed {args.seed}, protocol {args.protocol}: {len(held):,} held-out interactions "
          f"({len(split.valid):,} validation, {len(split.test):,} test pairs)")
    print(f"tags: {len(tags):,} by {tags['context_id'].nunique():,} users on {tags['item_id'].nunique():,} items")
    print(f"dropped: {len(tags) - len(kept):,} ({int(on_held.sum()):,} on a held-out (user, item); "
          f"{len(tags) - len(kept) - int(on_held.sum()):,} more written at or after the user's first held-out "
          f"interaction); kept {len(kept):,}")
    for name, pairs in (("validation", split.valid), ("test", split.test)):
        own = sum((c, t) in tagged for c, t in zip(pairs["context_id"], pairs["target_item"]))
        print(f"{name} targets with their own user's tag in their text before the fix: {own:,} of {len(pairs):,} "
              f"({own / max(len(pairs), 1):.1%}); after: 0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
