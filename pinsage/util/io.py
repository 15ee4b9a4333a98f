"""Atomic artifact writes and the Parquet layout shared by every stage.

Every write goes to a temporary name in the destination directory and is renamed into place, so a
killed or failed step never leaves a half-written artifact that a later step could read. Temporary
names start with a dot (``.name.XXXX.tmp``), so no reader's glob (``part-*.parquet``) matches one; a
killed writer leaves such a file behind, never a partial ``name``. The data is flushed to disk
(``fsync``) before the rename and the directory after it, so a power cut or a kernel crash cannot
leave the new name pointing at a file whose blocks never reached the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_path(path: str | os.PathLike, tree: bool = False) -> None:
    """Flush a file, or a directory's entries, to disk; ``tree``: also every file under the directory."""
    path = Path(path)
    if path.is_dir() and tree:
        for child in path.rglob("*"):
            if child.is_file() and not child.is_symlink():
                fsync_path(child)
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` as a whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    restore_interrupted_swap(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        fsync_path(tmp, tree=True)  # its files and its entries, before it takes the name
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)  # a kill between these two renames is undone by the next call
            os.replace(tmp, path)
            fsync_path(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            fsync_path(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restore_interrupted_swap(path: str | os.PathLike) -> bool:
    """If a process died between moving ``path`` aside and moving its replacement in, put it back.

    Returns True when the previous complete directory was restored.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
        return True
    return False


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(path: str | os.PathLike, table: pa.Table) -> None:
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Plain numeric arrays only; read back with ``np.load(..., allow_pickle=False)``."""
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float matrix -> Arrow fixed-size list<float32>[D] column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), d)  # (N*D,) -> N x [D]


def column_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Arrow fixed-size list<float32>[D] column -> (N, D) float32 matrix."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    d = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(column), d)  # (N*D,) -> (N, D)


def update_sha256(h, path: str | os.PathLike):
    """Feed a file's bytes to the hash ``h`` (``hashlib.sha256()``) in 1 MiB chunks. -> h"""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    return update_sha256(hashlib.sha256(), path).hexdigest()
