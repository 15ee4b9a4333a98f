"""`python -m pinsage recommend --run` and `python -m tasks.recommend --model`: a readable table from a run
directory or the registered champion."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pinsage.serve.recommend import AmbiguousItem, Catalogue, ItemNotFound

from .conftest import MODEL, ROOT, community_of, subprocess_env


def _recommend(*args: str, env: dict | None = None, module: tuple[str, ...] = ("pinsage", "recommend")
               ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=subprocess_env(env))


def _table(stdout: str) -> list[list[str]]:
    lines = stdout.strip().splitlines()
    assert lines[1].split() == ["rank", "item", "title", "score"] and set(lines[2]) == {"-"}, stdout
    return [line.split() for line in lines[3:]]


def test_recommend_from_a_run_directory_prints_rank_item_title_score(served):
    r = _recommend("--run", str(served["run_dir"]), "--item", "item 7", "-k", "5")  # an exact title
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("items related to i7 (item 7)")
    rows = _table(r.stdout)
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5"]
    for rank, item, word, number, score in rows:
        assert f"{word} {number}" == f"item {item[1:]}" and item != "i7"
        assert -1.0 <= float(score) <= 1.0
    assert sum(community_of(row[1]) == community_of("i7") for row in rows) >= 4
    assert [float(row[4]) for row in rows] == sorted((float(row[4]) for row in rows), reverse=True)


def test_an_ambiguous_title_lists_the_candidates_and_an_unknown_one_says_so(served):
    r = _recommend("--run", str(served["run_dir"]), "--item", "tem 1")  # item 1, item 10..19
    assert r.returncode == 2 and r.stdout == ""
    assert "'tem 1' matches 11 items; choose one with --item ID" in r.stderr
    listed = [line.split() for line in r.stderr.splitlines()[2:]]
    assert listed == [[f"i{k}", "item", str(k)] for k in [1] + list(range(10, 20))]
    r = _recommend("--run", str(served["run_dir"]), "--item", "no such thing")
    assert r.returncode == 2 and "no item has the id 'no such thing' or a title containing it" in r.stderr
    r = _recommend("--run", str(served["data"]), "--item", "i1")  # a dataset, not a run directory
    assert r.returncode == 2 and "is not a finished run directory: index/index.faiss is missing" in r.stderr


def test_recommend_from_the_registered_champion_matches_the_run_directory(served):
    by_run = _recommend("--run", str(served["run_dir"]), "--item", "i40", "-k", "10")
    by_model = _recommend("--model", f"models:/{MODEL}@champion", "--item", "i40", "-k", "10",
                          env={"MLFLOW_TRACKING_URI": served["store"].uri}, module=("tasks.recommend",))
    assert by_run.returncode == 0 and by_model.returncode == 0, by_model.stderr[-3000:]
    assert _table(by_model.stdout) == _table(by_run.stdout)  # the same ranking through the pyfunc


def test_resolve_prefers_ids_then_exact_titles_then_parts_of_titles(served):
    cat = Catalogue.from_run(served["run_dir"])
    assert cat.resolve(" i5 ") == "i5"
    assert cat.resolve("ITEM 5") == "i5"  # exact title, case-insensitive, although "item 5x" do not exist
    assert cat.resolve("item 12") == "i12"
    with pytest.raises(AmbiguousItem) as err:
        cat.resolve("tem 2")
    assert {i for i, _ in err.value.candidates} == {"i2"} | {f"i{k}" for k in range(20, 30)}
    with pytest.raises(ItemNotFound):
        cat.resolve("")
