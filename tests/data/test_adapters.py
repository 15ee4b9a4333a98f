"""MovieLens adapters and dataset directory resolution."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pinsage.data.adapters import movielens_csv_to_contract, movielens_dat_to_contract, resolve_dataset_dir
from pinsage.data.dataset import DatasetError, load_dataset

ML_SMALL = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip("bundled ml-latest-small is missing")
    return movielens_csv_to_contract(ML_SMALL, tmp_path_factory.mktemp("conv") / "ml")


def test_ml_latest_small_items_and_interactions(converted):
    movies = pd.read_csv(ML_SMALL / "movies.csv")
    ratings = pd.read_csv(ML_SMALL / "ratings.csv")
    liked = ratings[ratings["rating"] >= 4.0]
    ds = load_dataset(converted)
    assert len(ds.items) == len(movies) == 9742  # every movie, rated or not
    assert ds.items["item_id"].tolist() == movies["movieId"].astype(str).tolist()
    assert ds.items["title"].tolist() == movies["title"].str.strip().tolist()
    assert len(ds.interactions) == len(liked)
    assert (ds.interactions["weight"] == 1.0).all()
    assert ds.has_timestamps
    got = ds.interactions[["context_id", "item_id", "timestamp"]]
    want = pd.DataFrame({"context_id": liked["userId"].astype(str).to_numpy(),
                         "item_id": liked["movieId"].astype(str).to_numpy(),
                         "timestamp": liked["timestamp"].to_numpy()})
    assert got.astype(object).equals(want.astype(object))
    assert (converted / "README.txt").read_bytes() == (ML_SMALL / "README.txt").read_bytes()


def test_min_rating_is_respected(tmp_path):
    ratings = pd.read_csv(ML_SMALL / "ratings.csv")
    out = movielens_csv_to_contract(ML_SMALL, tmp_path / "ml45", min_rating=4.5)
    assert len(load_dataset(out).interactions) == int((ratings["rating"] >= 4.5).sum())


def test_text_has_genres_only_and_tags_go_to_the_tags_file(converted):
    ds = load_dataset(converted)
    text = dict(zip(ds.items["item_id"], ds.items["text"]))
    title = dict(zip(ds.items["item_id"], ds.items["title"]))
    movies = pd.read_csv(ML_SMALL / "movies.csv").set_index("movieId")
    genres = movies["genres"].str.split("|").map(
        lambda gs: " ".join(g for g in gs if g != "(no genres listed)").lower())
    assert text == {str(m): g for m, g in genres.items()}  # no tag, no title in text
    assert title[str(1)] == movies.loc[1, "title"]
    assert "adventure" in text["1"] and "toy story" not in text["1"]
    no_genre = movies.index[movies["genres"] == "(no genres listed)"]
    assert len(no_genre) and all(text[str(m)] == "" for m in no_genre)
    # the users' tags, every one (all name listed movies), in file order: prepare decides which join the text
    tags = pd.read_csv(ML_SMALL / "tags.csv", dtype=str, keep_default_na=False)
    assert (converted / "tags.parquet").is_file() and ds.tags_file.name == "tags.parquet"
    assert ds.tags["context_id"].tolist() == tags["userId"].tolist()
    assert ds.tags["item_id"].tolist() == tags["movieId"].tolist()
    assert ds.tags["tag"].tolist() == tags["tag"].str.strip().tolist()
    assert ds.tags["timestamp"].tolist() == tags["timestamp"].astype(int).tolist()


def make_ml1m(root: Path) -> Path:
    root.mkdir(parents=True)
    movies = ("1::Toy Story (1995)::Animation|Children's|Comedy\n"
              "2::Café Society, The (1995)::Drama\n"
              "3::Never Rated: A Film (2000)::Drama|Thriller\n")
    (root / "movies.dat").write_bytes(movies.encode("iso-8859-1"))
    ratings = ("1::1::5::978300760\n1::2::3::978302109\n2::2::4::978301968\n"
               "2::1::2::978300275\n3::2::5::978824291\n")
    (root / "ratings.dat").write_bytes(ratings.encode("iso-8859-1"))
    (root / "users.dat").write_text("1::F::1::10::48067\n")
    return root


def test_dat_adapter_on_fabricated_ml1m(tmp_path):
    src = make_ml1m(tmp_path / "ml-1m")
    ds = load_dataset(movielens_dat_to_contract(src, tmp_path / "out"))
    assert ds.items["item_id"].tolist() == ["1", "2", "3"]
    assert ds.items["title"].tolist()[1] == "Café Society, The (1995)"
    assert ds.items["title"].tolist()[2] == "Never Rated: A Film (2000)"
    assert ds.items["text"].tolist()[0] == "animation children's comedy"
    assert ds.tags is None and not (tmp_path / "out" / "tags.parquet").exists()  # no tags.dat
    inter = ds.interactions
    assert list(zip(inter["context_id"], inter["item_id"], inter["timestamp"])) == [
        ("1", "1", 978300760), ("2", "2", 978301968), ("3", "2", 978824291)]
    assert (inter["weight"] == 1.0).all()


def test_dat_adapter_keeps_tags_apart(tmp_path):
    src = make_ml1m(tmp_path / "ml-1m")
    (src / "tags.dat").write_text("1::2::Jazz Age::978300800\n2::9::unlisted::978300801\n3::1:: ::978300802\n")
    ds = load_dataset(movielens_dat_to_contract(src, tmp_path / "out"))
    assert ds.items["text"].tolist() == ["animation children's comedy", "drama", "drama thriller"]
    assert list(zip(ds.tags["context_id"], ds.tags["item_id"], ds.tags["tag"], ds.tags["timestamp"])) == [
        ("1", "2", "Jazz Age", 978300800)]  # unlisted movie and empty tag dropped


def test_resolve_contract_dir_returned_as_is(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "items.csv").write_text("item_id\nA\n")
    (root / "interactions.csv").write_text("context_id,item_id\nu,A\n")
    assert resolve_dataset_dir(root, tmp_path / "cache") == root
    assert not (tmp_path / "cache").exists()


def test_resolve_converts_once_and_reuses(tmp_path):
    src = make_ml1m(tmp_path / "ml-1m")
    cache = tmp_path / "cache"
    first = resolve_dataset_dir(src, cache)
    assert first.parent == cache and first.name.startswith("ml-1m-")
    stamp = (first / "items.parquet").stat().st_mtime_ns
    again = resolve_dataset_dir(src, cache)
    assert again == first and (again / "items.parquet").stat().st_mtime_ns == stamp
    # new source bytes -> a new conversion
    with open(src / "ratings.dat", "ab") as fh:
        fh.write(b"4::3::5::978824300\n")
    changed = resolve_dataset_dir(src, cache)
    assert changed != first and len(load_dataset(changed).interactions) == 4


def test_resolve_ml_latest_small(tmp_path):
    out = resolve_dataset_dir(ML_SMALL, tmp_path / "cache")
    assert out.name.startswith("ml-latest-small-") and len(load_dataset(out).items) == 9742


def test_resolve_refuses_unknown_layout(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "data.txt").write_text("x")
    with pytest.raises(DatasetError) as info:
        resolve_dataset_dir(root, tmp_path / "cache")
    msg = str(info.value)
    assert "items" in msg and "movies.csv" in msg and "data.txt" in msg
    with pytest.raises(DatasetError, match="does not exist"):
        resolve_dataset_dir(tmp_path / "missing", tmp_path / "cache")


def test_resolve_refuses_half_a_contract(tmp_path):
    root = tmp_path / "half"
    root.mkdir()
    (root / "items.csv").write_text("item_id\nA\n")
    with pytest.raises(DatasetError, match="interactions.parquet and interactions.csv"):
        resolve_dataset_dir(root, tmp_path / "cache")
