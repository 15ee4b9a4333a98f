"""The code passes the linter: ``ruff check .`` with the settings in pyproject.toml ([tool.ruff]:
pyflakes, the pycodestyle errors and warnings, import order). ruff is pinned in requirements.txt;
without it these tests fail rather than skip, so a missing linter is never mistaken for clean code."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff_check(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed (`python -m ruff` cannot run): "
                    "pip install -r requirements.txt -c constraints.txt")
    return subprocess.run([sys.executable, "-m", "ruff", "check", str(path)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_repository_passes_ruff():
    p = _ruff_check(ROOT, cwd=ROOT)
    assert p.returncode == 0, f"ruff check . found problems:\n{p.stdout}\n{p.stderr}"


def test_ruff_reports_an_unused_import_and_unsorted_imports(tmp_path):
    # the check above can fail: the same settings flag what they are meant to flag
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "sloppy.py").write_text("import sys\nimport os\n\nprint(sys.argv)\n")
    p = _ruff_check(tmp_path, cwd=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "F401" in out and "I001" in out, out
