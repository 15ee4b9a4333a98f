"""The answer table: every item's top K precomputed with the version's own index, equal to what the
index answers, checksummed, rebuilt by a refresh; and the registered model answers without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pinsage.export.answers import ANSWER_K, MIN_K, table_k
from pinsage.export.index import IndexConfig, build_index, load_answers, save_index
from pinsage.serve.recommend import Catalogue

from .conftest import MODEL, ROOT, subprocess_env


def _catalogue(tmp_path, n=400, d=16, kind="flat", prior=True, answer_k=None, seed=0) -> Catalogue:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pri = (0.1 * np.log1p(rng.integers(0, 50, n))).astype(np.float32) if prior else None
    ids = np.array([f"m{i}" for i in range(n)])
    index = build_index(emb, IndexConfig(kind=kind), pri)
    save_index(tmp_path / "index", index, ids, emb, answer_k=answer_k)
    return Catalogue(index, ids, ids, emb, {i: f"title {i}" for i in ids},
                     load_answers(tmp_path / "index", index.ntotal))


def assert_same_answers(cat: Catalogue, item_ids, k: int, tol: float = 1e-5) -> None:
    """The table's answer and a search of the index agree: the same scores, and the same items
    wherever two neighbouring scores are not tied within ``tol`` (a tie may come in either order)."""
    table = cat.answers(item_ids, k)
    saved, cat.table = cat.table, None
    try:
        index = [cat.answers([q], k)[0] for q in item_ids]  # one search per query, as a request makes
    finally:
        cat.table = saved
    for t, i in zip(table, index):
        assert t.error is None and len(t.item_ids) == len(i.item_ids) == min(k, len(cat) - 1), (t, i)
        assert np.allclose(t.scores, i.scores, atol=tol), t.query
        untied = np.abs(np.diff(np.r_[np.inf, i.scores, -np.inf])) > tol  # gap before each position
        clear = untied[:-1] & untied[1:]
        assert [x for x, c in zip(t.item_ids, clear) if c] == [x for x, c in zip(i.item_ids, clear) if c], t.query


@pytest.mark.parametrize("kind,prior", [("flat", True), ("flat", False), ("hnsw", True)])
def test_the_table_answers_what_the_index_answers(tmp_path, kind, prior):
    cat = _catalogue(tmp_path, kind=kind, prior=prior)
    assert cat.table is not None and cat.table.k == ANSWER_K
    assert_same_answers(cat, list(cat.item_ids), 10)
    assert_same_answers(cat, list(cat.item_ids[:50]), ANSWER_K)
    # the query itself is never its own answer, and scores come best first
    for a in cat.answers(list(cat.item_ids), ANSWER_K):
        assert a.query not in a.item_ids and np.all(np.diff(a.scores) <= 1e-6)


def test_past_k_and_for_items_without_a_row_the_index_answers(tmp_path):
    cat = _catalogue(tmp_path, answer_k=20)
    assert cat.table.k == 20
    deep = cat.answers(["m3"], 60)[0]  # k > K: the index, whose first 20 are the table's row
    assert len(deep.item_ids) == 60
    assert deep.item_ids[:20] == cat.answers(["m3"], 20)[0].item_ids
    cat.table_row_of = {i: r for i, r in cat.table_row_of.items() if i != "m5"}  # an item the table lacks
    assert_same_answers(cat, ["m5", "m6"], 10)


def test_k_is_100_while_the_table_fits_its_budget_then_what_fits():
    assert table_k(60) == 59 and table_k(10_000) == 100 and table_k(2_000_000) == 100
    assert table_k(10**7, budget=2 << 30) == 26  # 2 GiB / (8 bytes x 10^7 items)
    assert table_k(10**9) == MIN_K and table_k(1) == 0


def test_a_damaged_table_is_refused_naming_it(tmp_path):
    cat = _catalogue(tmp_path, n=50)
    path = tmp_path / "index" / "answers.parquet"
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["answers"]["k"] == 49 and len(manifest["answers"]["sha256"]) == 64
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="answers.parquet: sha256 .* differs from the .* recorded in"):
        load_answers(tmp_path / "index", cat.index.ntotal)


def test_an_index_saved_without_a_table_answers_from_the_index(tmp_path):
    cat = _catalogue(tmp_path, n=50)
    save_index(tmp_path / "old", cat.index, cat.index_ids)  # an older version's index: no table
    assert load_answers(tmp_path / "old", 50) is None
    assert "answers" not in json.loads((tmp_path / "old" / "manifest.json").read_text())


def _champion(served):
    import mlflow

    mlflow.set_tracking_uri(served["store"].uri)
    client = mlflow.MlflowClient(served["store"].uri)
    return client.get_model_version_by_alias(MODEL, "champion"), mlflow


def test_the_registered_versions_table_equals_its_index_and_is_checksummed(served):
    mv, mlflow = _champion(served)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    cat = model.unwrap_python_model().catalogue
    assert cat.table is not None and cat.table.k == len(cat) - 1  # 60 items: each one's 59 others
    assert_same_answers(cat, list(cat.item_ids), 10)
    assert_same_answers(cat, list(cat.item_ids), cat.table.k)
    run_index = served["run_dir"] / "index"
    sha = json.loads((run_index / "manifest.json").read_text())["answers"]["sha256"]
    assert mv.tags["answers_sha256"] == sha  # the version's provenance names its table
    assert json.loads((run_index / "source.json").read_text())["answers_sha256"] == sha


def test_the_registered_model_needs_no_torch(served):
    mv, mlflow = _champion(served)
    reqs = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{mv.version}/requirements.txt")
    names = [line.split("==")[0].strip().lower() for line in open(reqs) if line.strip()]
    assert "faiss-cpu" in names and not any(n.startswith("torch") for n in names), names
    # load and answer in a process where `import torch` fails
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mlflow, pandas as pd\n"
            f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
            "out = m.predict(pd.DataFrame({'item_id': ['i1', 'nope']}), params={'k': 3})\n"
            "print(out['item_id'].tolist()[:3], out['error'].tolist()[3])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=subprocess_env({"MLFLOW_TRACKING_URI": served["store"].uri}))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "not in the model's catalogue" in r.stdout and r.stdout.count("'i") == 3, r.stdout
