"""Atomic writes reach the disk before they take their name (fsync of the data, then of the directory).

A power cut cannot be produced in a test; what can be checked is the order of the calls the kernel
gets, recorded at ``os.fsync`` (the one thing replaced here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pinsage.util import io


@pytest.fixture
def synced(monkeypatch):
    """Each os.fsync call as (the path of the descriptor, the names present beside it at that moment)."""
    calls = []
    real = os.fsync

    def fsync(fd):
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        calls.append((path, sorted(p.name for p in (path if path.is_dir() else path.parent).iterdir())))
        real(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    return calls


def test_a_file_is_flushed_before_its_rename_and_its_directory_after(tmp_path, synced):
    io.write_json(tmp_path / "metrics.json", {"mrr": 0.1})
    (data, before), (directory, after) = synced
    assert data.parent == tmp_path and data.name.startswith(".metrics.json.") and "metrics.json" not in before
    assert directory == tmp_path and "metrics.json" in after


def test_a_directory_is_flushed_file_by_file_before_it_replaces_the_old_one(tmp_path, synced):
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "old.parquet").write_text("old")
    with io.atomic_dir(tmp_path / "embeddings") as tmp:
        (tmp / "part-00000.parquet").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("b")
    paths = [p for p, _ in synced]
    assert {p.name for p in paths[:-2]} == {"part-00000.parquet", "b"}  # every file first
    assert paths[-2].name.startswith(".embeddings.")  # then the new directory's entries, under its temporary name
    assert paths[-1] == tmp_path and "embeddings" in synced[-1][1]  # then the parent, after the swap
    assert sorted(os.listdir(tmp_path / "embeddings")) == ["part-00000.parquet", "sub"]
