"""What a run records about where it came from: the code's commit and files' digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tasks.runs import REPO_ROOT


def git_commit() -> str:
    env = os.environ.get("PINSAGE_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
