"""report.html: rendered by the run, logged to MLflow, and readable in headless Chromium, offline."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import numpy as np
import pytest

from pinsage.recommend import Catalogue
from pinsage.report import default_queries

CHROMIUM_HINT = ("chromium is not installed: `apt-get install -y chromium` (Debian; .ci/run installs it). "
                 "This test renders the report in a real browser and does not skip without one.")
# No network for the browser: every host resolves to nothing and any proxy use hits a closed port.
OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(CHROMIUM_HINT)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", *OFFLINE, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_the_run_writes_the_report_and_logs_it_to_mlflow(served):
    from mlflow import MlflowClient

    report = served["run_dir"] / "report.html"
    assert served["evaluate"]["report"] == str(report) and report.exists()
    c = MlflowClient(tracking_uri=served["store"].uri)
    assert "report.html" in {f.path for f in c.list_artifacts(served["ref"]["mlflow_run_id"])}
    page = report.read_text()
    # stands alone: no script, no external reference, charts inline, images embedded
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count("<svg") == 6  # 4 metric charts against the baselines + loss + validation MRR
    for method in ("pinsage", "itemknn", "popularity", "pixie"):
        assert f">{method}</text>" in page
    assert page.count('src="data:image/jpeg;base64,') >= 10  # items of the dataset with an image


def test_headless_chromium_shows_the_charts_and_the_example_titles(served, tmp_path):
    from PIL import Image

    report = served["run_dir"] / "report.html"
    shot = tmp_path / "report.png"
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-3000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert img.shape[:2] == (1600, 1200)
    not_white = (img < 240).any(axis=2).mean()
    assert img.std() > 20 and not_white > 0.03, (img.std(), not_white)  # a blank page fails both
    red = ((img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)).mean()  # the PinSage bars
    assert red > 0.001, red

    dom = _chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-3000:]
    text = html.unescape(dom.stdout)
    catalogue = Catalogue.from_run(served["run_dir"])
    queries = default_queries(served["run_dir"], 8)
    answer = catalogue.related(queries, 10)
    assert answer["error"].isna().all()
    for q in queries:  # every example query with its whole top-10, by title
        assert f"<b>{catalogue.title(q)}</b>" in text, q
        for title in answer.loc[answer["query_item_id"] == q, "title"]:
            assert f'<span class="title">{title}</span>' in text, (q, title)
    assert "PinSage against the baselines" in text and "validation MRR" in text
