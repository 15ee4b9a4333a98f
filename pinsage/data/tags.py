"""User-written tags in item text, without the held-out future (docs/evaluation.md).

Tags are users' actions, like interactions: a user's tag on an item they engage with later, in
validation or test, describes the target. So an item's text gets only the tags the training split
could have seen (:func:`allowed_tags`), appended by :func:`append_tags`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def allowed_tags(tags: pd.DataFrame, heldout: pd.DataFrame) -> pd.DataFrame:
    """The tags the training split could have seen.

    A tag is dropped when

    1. its (context_id, item_id) is a held-out interaction, whenever it was written; or
    2. it was written at or after (``>=``) the first held-out interaction of its context: from that
       moment on the context's actions belong to the evaluated future (a tag in the same second as
       the interaction is taken as written with it).

    Rule 2 needs both timestamps: a tag without one (no ``timestamp`` column, or a missing value),
    or of a context whose held-out interactions have none, is kept unless rule 1 drops it. Tags of
    contexts without held-out interactions are all kept.

    Args:
        tags: context_id, item_id, tag; optional timestamp (unix seconds), row (file order).
        heldout: every interaction removed from training (validation and test targets, or all
            arrivals of new items): context_id, item_id; optional timestamp.
    Returns:
        the rows of ``tags`` that are kept, in their order (index reset).
    """
    if len(tags) == 0 or len(heldout) == 0:
        return tags.reset_index(drop=True)
    ctx = tags["context_id"].astype(str).to_numpy()
    pair = pd.MultiIndex.from_arrays([ctx, tags["item_id"].astype(str).to_numpy()])
    held_pairs = pd.MultiIndex.from_arrays([heldout["context_id"].astype(str).to_numpy(),
                                            heldout["item_id"].astype(str).to_numpy()])
    drop = pair.isin(held_pairs)
    if "timestamp" in tags.columns and "timestamp" in heldout.columns:
        held_ts = pd.to_numeric(heldout["timestamp"], errors="coerce")
        first = held_ts.groupby(heldout["context_id"].astype(str).to_numpy()).min()  # NaN skipped
        limit = pd.Series(ctx).map(first).to_numpy(dtype=np.float64, na_value=np.nan)
        ts = pd.to_numeric(tags["timestamp"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            drop |= ts >= limit  # False wherever either side is missing
    return tags[~drop].reset_index(drop=True)


def append_tags(items: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    """``items`` with each item's tags appended to its ``text``: lower-cased, joined with spaces, in
    the order they were written (timestamp, ties and missing timestamps, which come last, by file
    order: the ``row`` column, else the order of ``tags``). Items without tags keep their text.
    """
    items = items.copy()
    if len(tags) == 0:
        return items
    t = tags.reset_index(drop=True)
    order = t["row"].to_numpy(dtype=np.int64) if "row" in t.columns else np.arange(len(t), dtype=np.int64)
    t = t.assign(_order=order)
    keys = ["timestamp", "_order"] if "timestamp" in t.columns else ["_order"]
    t = t.sort_values(keys, kind="stable", na_position="last")
    words = t["tag"].astype(str).str.strip().str.lower()
    joined = words[words != ""].groupby(t["item_id"].astype(str), sort=False).agg(" ".join)
    extra = items["item_id"].astype(str).map(joined)
    has = extra.notna().to_numpy()
    text = items["text"].fillna("").astype(str)
    items["text"] = text.where(~has, (text + " " + extra.fillna("")).str.strip())
    return items
