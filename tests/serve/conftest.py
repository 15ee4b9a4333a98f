"""Fixtures for the serving tests: one small run, logged and registered through the real task chain."""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest
from orchestration.conftest import ROOT, community_data, small_params, subprocess_env  # noqa: F401

MODEL = "pinsage-serving-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_images(data: Path, every: int = 2) -> Path:
    """Give every ``every``-th item a small PNG (community 0 reddish, community 1 bluish)."""
    from PIL import Image

    items = pd.read_csv(data / "items.csv", dtype=str)
    (data / "images").mkdir(exist_ok=True)
    paths = []
    for k, item in enumerate(items["item_id"]):
        if k % every:
            paths.append("")
            continue
        colour = (200, 40 + k, 40) if "alpha" in items.loc[k, "text"] else (40, 40 + k, 200)
        img = Image.new("RGB", (64, 48), colour)
        img.paste((255, 255, 255), (8, 8, 24, 24))  # a white square: not a flat image
        img.save(data / "images" / f"{item}.png")
        paths.append(f"images/{item}.png")
    items["image_path"] = paths
    items.to_csv(data / "items.csv", index=False)
    return data


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """A finished DAG-equivalent run (tasks.flow) whose version is the champion of MODEL.

    Session-scoped (the chain takes ~30 s) and isolated: the MLflow environment is set only while
    the chain runs; tests pass ``store.uri`` explicitly to the processes and clients they start.
    """
    from orchestration.conftest import Store, _activate

    from tasks import flow

    mp = pytest.MonkeyPatch()
    store = _activate(Store(tmp_path_factory.mktemp("serving-store")), mp)
    try:
        data = add_images(community_data(tmp_path_factory.mktemp("data") / "community"))
        params = small_params(data, model_name=MODEL)
        result = flow.run_chain(params, run_key="manual__serving", dag_id="pinsage_daily")
    finally:
        mp.undo()
    return {"data": data, "store": store, "run_dir": Path(result["ref"]["run_dir"]), **result}


def community_of(item_id: str) -> int:
    """The two communities of ``make_community_dataset`` (60 items): i0-i29 and i30-i59."""
    return int(int(item_id[1:]) >= 30)

