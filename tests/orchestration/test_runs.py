"""Run directories and dataset paths: names that cannot leave the runs directory, paths resolved
the same way wherever a step runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.runs import run_dir_for, runs_dir, safe_name
from tasks.settings import resolve_data_path


@pytest.mark.parametrize("run_key, name", [
    ("manual__2025-01-01T00:00:00+00:00", "manual__2025-01-01T00-00-00-00-00"),
    ("../../etc/passwd", "etc-passwd"),
    ("/abs/path", "abs-path"),
    ("a\\b c\x00d", "a-b-c-d"),
    ("..hidden", "hidden"),
    ("x" * 300, "x" * 200),
])
def test_safe_name_keeps_a_run_id_to_one_harmless_directory_name(run_key, name):
    assert safe_name(run_key) == name
    assert "/" not in name and not name.startswith(".")


@pytest.mark.parametrize("bad", ["", "..", "/", "../..", "///", "***"])
def test_a_run_id_without_usable_characters_is_refused(bad):
    with pytest.raises(ValueError, match="no usable characters"):
        safe_name(bad)


def test_run_directories_stay_under_the_runs_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PINSAGE_RUNS_DIR", str(tmp_path / "runs"))
    root = runs_dir()
    assert root == (tmp_path / "runs").resolve()
    for dag_id, run_key in [("pinsage_daily", "../../../tmp/evil"), ("../x", "/etc"), ("d", "..%2f..")]:
        path = run_dir_for(dag_id, run_key)
        assert path.parent.parent == root and path.resolve() == path  # two plain levels, nothing to resolve


def test_dataset_paths_resolve_against_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PINSAGE_DATA_ROOT", str(tmp_path / "root"))
    assert resolve_data_path("data/ml") == str((tmp_path / "root" / "data" / "ml").resolve())
    assert resolve_data_path("data/../other") == str((tmp_path / "root" / "other").resolve())  # normalised
    assert resolve_data_path(str(tmp_path / "abs")) == str((tmp_path / "abs").resolve())  # absolute: as given
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_path("~/d") == str((tmp_path / "home" / "d").resolve())
    monkeypatch.delenv("PINSAGE_DATA_ROOT")
    assert Path(resolve_data_path("data/x")) == Path(__file__).resolve().parents[2] / "data" / "x"
