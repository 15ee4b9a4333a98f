"""Interrupted writes: a writer killed mid-Parquet-write, and a write that hits a file-size limit (what
a full disk looks like to the writer: write(2) fails with EFBIG), both in real child processes. No
partial artifact becomes visible to a later step: the previous complete one stays, or none at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_community_dataset

from pinsage import pipeline
from pinsage.export.embeddings import read_embeddings, write_embeddings
from pinsage.util.io import atomic_dir, restore_interrupted_swap, write_table

from .conftest import ROOT, subprocess_env

WRITER = textwrap.dedent("""
    import sys
    import numpy as np, pyarrow as pa
    from pinsage.export.embeddings import write_embeddings
    from pinsage.util.io import write_table
    kind, target = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(1)
    if kind == "table":   # ~100 MB of incompressible doubles: the write takes a while
        table = pa.table({"x": rng.random(12_000_000)})
        print("ready", flush=True)
        write_table(target, table)
    else:                 # 600k x 32 float32 embeddings in 6 shards
        ids = np.array([f"v2-{i}" for i in range(600_000)])
        emb = rng.random((600_000, 32), dtype=np.float32)
        print("ready", flush=True)
        write_embeddings(target, ids, emb)
    print("finished", flush=True)
""")


def _partial(target: Path) -> list[Path]:
    """Temporary files of a write in progress beside ``target`` (dot-prefixed, .tmp)."""
    found = []
    for p in target.parent.glob(f".{target.name}.*tmp*"):
        found += [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    return [f for f in found if f.stat().st_size > 0]


@pytest.mark.parametrize("kind", ["table", "embeddings"])
def test_sigkill_during_a_parquet_write_leaves_the_previous_artifact(kind, tmp_path):
    target = tmp_path / ("data.parquet" if kind == "table" else "embeddings")
    ids_v1 = np.array([f"v1-{i}" for i in range(5)])
    emb_v1 = np.eye(5, 4, dtype=np.float32)
    if kind == "table":
        import pyarrow as pa
        write_table(target, pa.table({"x": np.arange(10.0)}))
    else:
        write_embeddings(target, ids_v1, emb_v1)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target)], env=subprocess_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()[-2000:]
        deadline = time.time() + 120
        while not _partial(target):  # the temporary file has bytes: the write is under way
            assert proc.poll() is None, f"the writer finished before it could be killed: {proc.stderr.read()}"
            assert time.time() < deadline
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _partial(target), "the kill landed after the write: nothing was interrupted"
    # a later step sees the complete previous version, never the partial one
    if kind == "table":
        assert pq.read_table(target).column("x").to_pylist() == list(np.arange(10.0))
    else:
        ids, emb = read_embeddings(target)
        assert ids.tolist() == ids_v1.tolist() and np.array_equal(emb, emb_v1)
        assert [p.name for p in target.glob("part-*.parquet")] == ["part-00000.parquet"]
    # the leftovers are dot-prefixed temporaries that no reader's name or glob matches
    assert all(p.name.startswith(".") for p in target.parent.iterdir() if p != target)
    # the retried step writes a complete new version over it
    done = subprocess.run([sys.executable, "-c", WRITER, kind, str(target)], env=subprocess_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "finished" in done.stdout, done.stderr[-2000:]
    if kind == "table":
        assert pq.read_metadata(target).num_rows == 12_000_000
    else:
        assert len(read_embeddings(target)[0]) == 600_000


def test_a_kill_between_the_two_renames_of_a_directory_swap_is_undone(tmp_path):
    """atomic_dir moves the old directory aside, then the new one in; a process killed between the
    two leaves ``.name.old`` and no ``name``. The next write (or reader) puts the old one back."""
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "ids.parquet").write_text("v1")
    os.replace(target, tmp_path / ".index.old")  # the state such a kill leaves
    assert not target.exists()
    assert restore_interrupted_swap(target) and (target / "ids.parquet").read_text() == "v1"
    os.replace(target, tmp_path / ".index.old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:  # the next write restores it first, then fails itself
            raise RuntimeError("boom")
    assert (target / "ids.parquet").read_text() == "v1" and not (tmp_path / ".index.old").exists()


DISK_FULL = textwrap.dedent("""
    import json, resource, signal, sys
    from pinsage import pipeline
    cfg = pipeline.PipelineConfig.from_dict(json.loads(sys.argv[1]))
    limit = int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    pipeline.prepare(cfg, log=print)
""")


def test_a_full_disk_during_prepare_leaves_the_previous_complete_output(tmp_path):
    small = make_community_dataset(tmp_path / "v1", n_items=40, n_contexts=40)
    cfg = pipeline.PipelineConfig(data=str(small), out=str(tmp_path / "run"))
    cfg.walks.top_t = 5
    pipeline.prepare(cfg, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "prepare").iterdir()}
    config_before = (tmp_path / "run" / "config.json").read_bytes()
    # the next day's data is bigger; the disk fills while train.parquet is written
    big = make_community_dataset(tmp_path / "v2", n_items=400, n_contexts=6000, per_context=8)
    cfg_big = pipeline.PipelineConfig.from_dict(dict(cfg.to_dict(), data=str(big)))
    limit = 256 * 1024
    assert max(len(b) for b in before.values()) < limit
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, json.dumps(cfg_big.to_dict()), str(limit)],
                          env=subprocess_env({"PYTHONDONTWRITEBYTECODE": "1"}), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "File too large" in proc.stderr or "EFBIG" in proc.stderr, proc.stderr[-3000:]
    # what a later step reads is still the previous complete output, byte for byte; no temporaries
    after = {p.name: p.read_bytes() for p in (tmp_path / "run" / "prepare").iterdir()}
    assert after == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "prepare"]
    assert (tmp_path / "run" / "config.json").read_bytes() == config_before  # the config of that output
    assert pipeline.graph(cfg, log=lambda s: None)["graph"]  # the next stage runs on a consistent set
    # with the space back, the retry writes the new output
    pipeline.prepare(cfg_big, log=lambda s: None)
    assert json.loads((tmp_path / "run" / "prepare" / "summary.json").read_text())["n_items"] == 400


def test_a_full_disk_on_a_first_run_leaves_nothing_for_the_next_step(tmp_path):
    big = make_community_dataset(tmp_path / "data", n_items=400, n_contexts=6000, per_context=8)
    cfg = pipeline.PipelineConfig(data=str(big), out=str(tmp_path / "run"))
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, json.dumps(cfg.to_dict()), str(256 * 1024)],
                          env=subprocess_env({"PYTHONDONTWRITEBYTECODE": "1"}), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "prepare").exists()
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    with pytest.raises(FileNotFoundError, match="summary.json"):
        pipeline.graph(cfg, log=lambda s: None)
