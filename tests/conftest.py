"""Shared fixtures: small fabricated datasets with known structure."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def make_community_dataset(path: Path, n_items: int = 60, n_contexts: int = 80, per_context: int = 8,
                           seed: int = 0, timestamps: bool = True, extra_items: int = 0) -> Path:
    """Two communities: items 0..n/2-1 ("a" words) and n/2..n-1 ("b" words); every context engages
    items of one community only, in a time order. ``extra_items`` catalogue items never interacted."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    items = pd.DataFrame({
        "item_id": [f"i{k}" for k in range(n_items + extra_items)],
        "title": [f"item {k}" for k in range(n_items + extra_items)],
        "text": [("alpha apple" if k % n_items < half else "beta banana") + f" w{k % 5}"
                 for k in range(n_items + extra_items)],
    })
    rows = []
    for c in range(n_contexts):
        community = c % 2
        pool = np.arange(half) + community * half
        chosen = rng.choice(pool, size=per_context, replace=False)
        for t, item in enumerate(chosen):
            rows.append({"context_id": f"u{c}", "item_id": f"i{item}", "timestamp": 1_000_000 + 1000 * c + t})
    inter = pd.DataFrame(rows)
    if not timestamps:
        inter = inter.drop(columns=["timestamp"])
    path.mkdir(parents=True, exist_ok=True)
    items.to_csv(path / "items.csv", index=False)
    inter.to_csv(path / "interactions.csv", index=False)
    return path


@pytest.fixture
def community_dataset(tmp_path) -> Path:
    return make_community_dataset(tmp_path / "data")


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium_page(viewport=(1400, 1100), http_credentials: dict | None = None):
    """A page of Debian's headless Chromium driven by Playwright (no browser download), offline.

    Only 127.0.0.1 is reachable: any other request is aborted, so a page that needs the internet
    shows it. Fails (never skips) without Chromium: ``scripts/test.sh`` installs it.
    ``http_credentials``: {"username", "password"} the browser answers a server's basic-auth prompt with.
    """
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (Debian), or run the README's "
                    "test command `bash scripts/test.sh`, which installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                          http_credentials=http_credentials)
            context.route("**/*", lambda route: route.continue_()
                          if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else route.abort())
            yield context.new_page()
        finally:
            browser.close()
