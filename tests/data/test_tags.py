"""Users' tags in item text: only what the training split could have seen (docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pinsage import pipeline
from pinsage.data.adapters import movielens_csv_to_contract
from pinsage.data.dataset import DatasetError, data_fingerprint, load_dataset
from pinsage.data.split import split_interactions, split_new_items
from pinsage.data.tags import allowed_tags, append_tags
from pinsage.experiments.newitems import write_dataset

ITEMS = "item_id,title,text\nA,Alpha,comedy\nB,Beta,drama\nC,Gamma,\nD,Delta,war\nE,Eps,\nF,Phi,\n"
# u1: A B C D -> tail holds out C (t=30, validation) and D (t=40, test): first held-out at t=30
# u2: A E F   -> holds out E (t=25) and F (t=35): first held-out at t=25
# u3: A B     -> fewer than 3 items: nothing held out
INTERACTIONS = ("context_id,item_id,timestamp\n"
                "u1,A,10\nu1,B,20\nu1,C,30\nu1,D,40\n"
                "u2,A,15\nu2,E,25\nu2,F,35\n"
                "u3,A,5\nu3,B,6\n")
TAGS = ("context_id,item_id,tag,timestamp\n"
        "u1,A,Classic,12\n"      # kept: before u1's first held-out, A is training
        "u1,D,Twist,25\n"        # dropped: (u1, D) is held out, though written before t=30
        "u1,B,Late,30\n"         # dropped: written at u1's first held-out interaction (>=)
        "u1,B,Early,29\n"        # kept: one second before it
        "u2,A,Funny,50\n"        # dropped: after u2's first held-out (t=25)
        "u2,C,Dark Humour,20\n"  # kept: (u2, C) is no interaction of u2; before t=25
        "u3,F,Noir,1000\n"       # kept: u3 has nothing held out
        "u3,A,Pixar,3\n"         # kept
        "u3,A,ALPHA,3\n")        # kept; same second as Pixar, later in the file


def write(root: Path, items=ITEMS, inter=INTERACTIONS, tags: str | None = TAGS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text(items)
    (root / "interactions.csv").write_text(inter)
    if tags is not None:
        (root / "tags.csv").write_text(tags)
    return root


def texts(items: pd.DataFrame) -> dict:
    return dict(zip(items["item_id"], items["text"]))


def test_heldout_carries_every_target_with_its_timestamp(tmp_path):
    ds = load_dataset(write(tmp_path / "d"))
    split = split_interactions(ds.interactions, ds.has_timestamps, seed=0, protocol="tail")
    got = set(zip(split.heldout["context_id"], split.heldout["item_id"], split.heldout["timestamp"]))
    assert got == {("u1", "C", 30), ("u1", "D", 40), ("u2", "E", 25), ("u2", "F", 35)}
    targets = set(zip(split.valid["context_id"], split.valid["target_item"])) | set(
        zip(split.test["context_id"], split.test["target_item"]))
    assert targets == {(c, i) for c, i, _ in got}


def test_rule_keeps_exactly_what_training_could_have_seen(tmp_path):
    ds = load_dataset(write(tmp_path / "d"))
    split = split_interactions(ds.interactions, ds.has_timestamps, seed=0, protocol="tail")
    kept = allowed_tags(ds.tags, split.heldout)
    assert kept["tag"].tolist() == ["Classic", "Early", "Dark Humour", "Noir", "Pixar", "ALPHA"]
    text = texts(append_tags(ds.items, kept))
    # by timestamp, ties by file order; lower-cased, after the item's own text
    assert text == {"A": "comedy pixar alpha classic", "B": "drama early", "C": "dark humour", "D": "war",
                    "E": "", "F": "noir"}


def test_without_timestamps_only_heldout_pairs_are_dropped(tmp_path):
    no_ts = "\n".join(",".join(line.split(",")[:3]) for line in TAGS.strip().split("\n")) + "\n"
    ds = load_dataset(write(tmp_path / "d", tags=no_ts))
    assert "timestamp" not in ds.tags.columns
    split = split_interactions(ds.interactions, ds.has_timestamps, seed=0, protocol="tail")
    kept = allowed_tags(ds.tags, split.heldout)
    assert kept["tag"].tolist() == ["Classic", "Late", "Early", "Funny", "Dark Humour", "Noir", "Pixar", "ALPHA"]
    assert texts(append_tags(ds.items, kept))["A"] == "comedy classic funny pixar alpha"  # file order


def test_prepare_writes_text_without_leaked_tags(tmp_path):
    data = write(tmp_path / "d")
    cfg = pipeline.PipelineConfig(data=str(data), out=str(tmp_path / "out"))
    cfg.walks.top_t = 2
    pipeline.prepare(cfg, log=lambda s: None)
    items = pq.read_table(tmp_path / "out/prepare/items.parquet").to_pandas()
    assert texts(items) == {"A": "comedy pixar alpha classic", "B": "drama early", "C": "dark humour",
                            "D": "war", "E": "", "F": "noir"}
    summary = json.loads((tmp_path / "out/prepare/summary.json").read_text())
    assert (summary["n_tags"], summary["n_tags_in_text"]) == (9, 6)


def test_new_items_treat_every_arrival_as_heldout(tmp_path):
    ds = load_dataset(write(tmp_path / "d"))
    split = split_new_items(ds.interactions, ds.has_timestamps, seed=0, new_items=["C", "E"])
    # arrivals (u1, C, 30) and (u2, E, 25): u1 from t=30 on, u2 from t=25 on, and both pairs
    kept = allowed_tags(ds.tags, split.arrivals)
    assert kept["tag"].tolist() == ["Classic", "Twist", "Early", "Dark Humour", "Noir", "Pixar", "ALPHA"]
    base = write_dataset(tmp_path / "base", ds.items, split.train, ds.root, tags=kept)
    assert not (base / "tags.csv").exists()  # the source's tags file is never linked in
    assert load_dataset(base).tags["tag"].tolist() == kept["tag"].tolist()


# --------------------------------------------------------------------------------------------
# the loader

def test_loader_reads_the_optional_tags_file(tmp_path):
    assert load_dataset(write(tmp_path / "none", tags=None)).tags is None
    ds = load_dataset(write(tmp_path / "d", tags=" context_id,item_id,tag\n u1 , A ,  x y \n"))
    assert ds.tags.to_dict("list") == {"context_id": ["u1"], "item_id": ["A"], "tag": ["x y"], "row": [0]}
    assert ds.tags_file.name == "tags.csv"
    assert len(load_dataset(write(tmp_path / "h", tags="context_id,item_id,tag\n")).tags) == 0  # no tags
    pq_root = write(tmp_path / "pq", tags=None)
    pd.DataFrame({"context_id": ["u1"], "item_id": [7], "tag": ["t"], "timestamp": [5]}).to_parquet(
        pq_root / "tags.parquet")
    with pytest.raises(DatasetError, match="unknown item '7'"):
        load_dataset(pq_root)
    cut = load_dataset(write(tmp_path / "cut"), max_timestamp=20)  # "as of": later tags are cut too
    assert cut.tags["tag"].tolist() == ["Classic", "Dark Humour", "Pixar", "ALPHA"]


@pytest.mark.parametrize("tags, column, row, message", [
    ("context_id,item_id,tag\nu1,A,x\nu1,Z,y\n", "item_id", 3, "unknown item 'Z': not in the items table"),
    ("context_id,item_id,tag\nu1,A,x\nu1,B, \n", "tag", 3, "tag is empty; expected a non-empty tag"),
    ("context_id,item_id,tag\nu1,A,x\nu1,B\n", "tag", 3, "tag is empty"),  # a short record
    ("context_id,item_id\nu1,A\n", "tag", None, "required column missing"),
    ("context_id,item_id,tag,timestamp\nu1,A,x,2020-01-01\n", "timestamp", 2, "unix seconds"),
    ("context_id,item_id,tag\n,A,x\n", "context_id", 2, "context_id is empty"),
])
def test_loader_refuses_bad_tags_naming_file_column_and_row(tmp_path, tags, column, row, message):
    with pytest.raises(DatasetError) as info:
        load_dataset(write(tmp_path / "d", tags=tags))
    err = info.value
    assert (err.file, err.column, err.row) == ("tags.csv", column, row)
    assert message in err.message


def test_fingerprint_covers_the_tags_file(tmp_path):
    root = write(tmp_path / "d", tags=None)
    without = data_fingerprint(root)
    (root / "tags.csv").write_text(TAGS)
    assert data_fingerprint(root) != without
    assert data_fingerprint(load_dataset(root)) == data_fingerprint(root)


# --------------------------------------------------------------------------------------------
# MovieLens

def make_movielens(root: Path) -> Path:
    """Four users, five movies: user 1 tags the movie it rates last (held out) and another one late."""
    root.mkdir(parents=True)
    (root / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n"
                                     "2,Heat (1995),Action|Crime\n3,Casino (1995),Crime|Drama\n"
                                     "4,Babe (1995),Children\n5,Empty (2000),(no genres listed)\n")
    rows = ["userId,movieId,rating,timestamp"]
    for u in (1, 2, 3, 4):
        rows += [f"{u},{m},4.5,{1000 * u + 10 * m}" for m in (1, 2, 3, 4)]
    (root / "ratings.csv").write_text("\n".join(rows) + "\n")
    # user 1: held out 3 (t=1030) and 4 (t=1040)
    (root / "tags.csv").write_text("userId,movieId,tag,timestamp\n"
                                   "1,1,Pixar,1005\n"        # kept
                                   "1,4,Pig,1001\n"          # dropped: (1, 4) is held out
                                   "1,2,Pacino,1035\n"       # dropped: after user 1's first held-out
                                   "2,5,Odd,900\n"           # kept
                                   "2,99,Unlisted,900\n"     # not in movies.csv: not converted
                                   "3,2, ,900\n")            # empty: not converted
    return root


def test_movielens_conversion_keeps_tags_out_of_text(tmp_path):
    ds = load_dataset(movielens_csv_to_contract(make_movielens(tmp_path / "ml"), tmp_path / "out"))
    assert texts(ds.items) == {"1": "animation comedy", "2": "action crime", "3": "crime drama", "4": "children",
                               "5": ""}
    assert (tmp_path / "out" / "tags.parquet").is_file()
    assert list(zip(ds.tags["context_id"], ds.tags["item_id"], ds.tags["tag"], ds.tags["timestamp"])) == [
        ("1", "1", "Pixar", 1005), ("1", "4", "Pig", 1001), ("1", "2", "Pacino", 1035), ("2", "5", "Odd", 900)]


def test_prepare_on_movielens_drops_a_heldout_users_late_tag(tmp_path):
    cfg = pipeline.PipelineConfig(data=str(make_movielens(tmp_path / "ml")), out=str(tmp_path / "out"))
    cfg.walks.top_t = 2
    pipeline.prepare(cfg, log=lambda s: None)
    text = texts(pq.read_table(tmp_path / "out/prepare/items.parquet").to_pandas())
    assert text == {"1": "animation comedy pixar", "2": "action crime", "3": "crime drama", "4": "children",
                    "5": "odd"}
