import numpy as np
import pytest

from pinsage.export.index import IndexConfig, build_index, load_index, save_index, search


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_returns_exact_top_k_without_the_query(tmp_path, kind):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.array([f"m{i}" for i in range(300)])
    save_index(tmp_path / "idx", build_index(emb, IndexConfig(kind=kind)), ids)
    index, loaded_ids = load_index(tmp_path / "idx")
    assert list(loaded_ids) == list(ids)
    got, scores = search(index, loaded_ids, emb[:20], k=5, exclude_ids=ids[:20])
    for q in range(20):
        s = emb @ emb[q]
        s[q] = -np.inf
        expected = ids[np.argsort(-s)[:5]]
        assert ids[q] not in got[q]
        assert list(got[q]) == list(expected)
        assert np.all(np.diff(scores[q]) <= 1e-6)


def test_auto_switches_to_hnsw_above_threshold():
    emb = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    assert type(build_index(emb, IndexConfig(hnsw_threshold=100))).__name__ == "IndexFlatIP"
    assert type(build_index(emb, IndexConfig(hnsw_threshold=10))).__name__ == "IndexHNSWFlat"
    with pytest.raises(ValueError):
        build_index(emb, IndexConfig(kind="ivf-nonsense"))
