"""What a run records about where it came from: the code's commit (files' digests: ``pinsage.util.io.sha256_file``)."""

from __future__ import annotations

import os
import subprocess

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
