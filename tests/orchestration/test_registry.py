"""The champion gate against a real MLflow registry (SQLite store): aliases and version tags only."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tasks import registry


@pytest.fixture
def store(module_store):
    """One SQLite registry for the module; each test gets its own registered model name."""
    return module_store


@pytest.fixture
def name(request) -> str:
    return "gate-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")


def make_version(store, tmp_path, name, mrr=None, embeddings=None) -> str:
    """A registered version whose run recorded ``validation_mrr`` (as the register step does), serving
    ``embeddings`` = (item ids, vectors) when given (as the recommender's ``artifacts/embeddings``)."""
    c = store.client()
    exp = c.get_experiment_by_name("gate") or c.get_experiment(c.create_experiment(
        "gate", artifact_location=str(tmp_path / "gate-artifacts")))
    run = c.create_run(exp.experiment_id)
    if mrr is not None and not (isinstance(mrr, float) and math.isnan(mrr)):
        c.log_metric(run.info.run_id, "validation_mrr", mrr)
    src = tmp_path / "models" / run.info.run_id
    src.mkdir(parents=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    if embeddings is not None:
        from pinsage.export.embeddings import write_embeddings

        write_embeddings(src / "artifacts" / "embeddings", *embeddings)
    try:
        c.get_registered_model(name)
    except Exception:
        c.create_registered_model(name)
    tags = {"pinsage.promotion": "candidate"}
    if mrr is not None:
        tags["validation_mrr"] = repr(mrr)
    mv = c.create_model_version(name, source=str(src), run_id=run.info.run_id, tags=tags)
    return str(mv.version)


def champion(store, name):
    return registry.champion_version(store.client(), name)


def tags_of(store, name, version) -> dict:
    return store.client().get_model_version(name, version).tags


def test_first_version_becomes_champion(store, tmp_path, name):
    v1 = make_version(store, tmp_path, name, 0.12)
    assert champion(store, name) is None
    promoted, reason = registry.gate(store.client(), name, v1, 0.12, margin=0.0)
    assert promoted and "no champion yet" in reason
    assert str(champion(store, name).version) == v1
    assert tags_of(store, name, v1)["pinsage.promotion"] == "champion"
    assert tags_of(store, name, v1)["pinsage.promotion_reason"] == reason


def test_a_worse_version_does_not_take_champion_and_is_tagged_with_why(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, 0.20)
    registry.gate(c, name, v1, 0.20, margin=0.0)
    v2 = make_version(store, tmp_path, name, 0.15)
    promoted, reason = registry.gate(c, name, v2, 0.15, margin=0.0)
    assert not promoted
    assert str(champion(store, name).version) == v1
    tags = tags_of(store, name, v2)
    assert tags["pinsage.promotion"] == "rejected"
    assert tags["pinsage.promotion_reason"] == reason
    assert "0.1500" in reason and f"champion version {v1}" in reason and "0.2000" in reason
    # an equal score does not "beat" the champion either
    v3 = make_version(store, tmp_path, name, 0.20)
    assert registry.gate(c, name, v3, 0.20, margin=0.0)[0] is False
    assert str(champion(store, name).version) == v1
    # aliases and tags only: no version was ever moved to a stage
    assert {mv.current_stage for mv in c.search_model_versions(f"name = '{name}'")} <= {"None", None}


def test_the_margin_is_required_and_the_old_champion_is_tagged_when_replaced(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, 0.100)
    registry.gate(c, name, v1, 0.100, margin=0.01)
    v2 = make_version(store, tmp_path, name, 0.105)  # better, but not by the margin
    promoted, reason = registry.gate(c, name, v2, 0.105, margin=0.01)
    assert not promoted and "margin 0.01" in reason
    assert str(champion(store, name).version) == v1
    v3 = make_version(store, tmp_path, name, 0.150)
    promoted, reason = registry.gate(c, name, v3, 0.150, margin=0.01)
    assert promoted and f"beats champion version {v1}" in reason
    assert str(champion(store, name).version) == v3
    assert tags_of(store, name, v1)["pinsage.replaced_by"] == v3
    assert {k: str(v) for k, v in c.get_registered_model(name).aliases.items()} == {"champion": v3}


@pytest.mark.parametrize("bad", [None, float("nan"), "not-a-number", float("inf")])
def test_a_missing_or_failed_evaluation_never_moves_the_alias(store, tmp_path, name, bad):
    c = store.client()
    # not even when there is no champion at all
    v1 = make_version(store, tmp_path, name, None)
    promoted, reason = registry.gate(c, name, v1, bad, margin=0.0)
    assert not promoted and "no valid evaluation" in reason
    assert champion(store, name) is None
    assert tags_of(store, name, v1)["pinsage.promotion"] == "rejected"
    # nor away from an existing champion
    v2 = make_version(store, tmp_path, name, 0.05)
    assert registry.gate(c, name, v2, 0.05, margin=0.0)[0]
    v3 = make_version(store, tmp_path, name, None)
    assert registry.gate(c, name, v3, bad, margin=0.0)[0] is False
    assert str(champion(store, name).version) == v2


def test_the_gate_keeps_its_decision_when_retried(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, 0.30)
    registry.gate(c, name, v1, 0.30, margin=0.0)
    v2 = make_version(store, tmp_path, name, 0.10)
    first = registry.gate(c, name, v2, 0.10, margin=0.0)
    # a retry (even one that would now read a different score) does not re-decide
    assert registry.gate(c, name, v2, 0.99, margin=0.0) == first
    assert str(champion(store, name).version) == v1
    # a retry after the alias moved but before the decision tag was written completes the promotion
    v3 = make_version(store, tmp_path, name, 0.40)
    c.set_registered_model_alias(name, "champion", v3)
    promoted, reason = registry.gate(c, name, v3, 0.40, margin=0.0)
    assert promoted and "already champion" in reason
    assert tags_of(store, name, v3)["pinsage.promotion"] == "champion"


def test_a_champion_without_recorded_mrr_falls_back_to_its_run_metric(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, 0.25)
    registry.gate(c, name, v1, 0.25, margin=0.0)
    c.delete_model_version_tag(name, v1, "validation_mrr")  # e.g. registered by an older version of the DAG
    v2 = make_version(store, tmp_path, name, 0.20)
    promoted, reason = registry.gate(c, name, v2, 0.20, margin=0.0)
    assert not promoted and "(0.2500)" in reason


def _run_dir(tmp_path, ids, vectors, pairs):
    """The parts of a run directory the gate reads: its validation pairs and its embeddings."""
    import pandas as pd
    import pyarrow as pa

    from pinsage.export.embeddings import write_embeddings
    from pinsage.util.io import write_table

    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    (out / "prepare").mkdir(parents=True)
    frame = pd.DataFrame(pairs, columns=["query_item", "target_item"])
    write_table(out / "prepare" / "valid.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    write_embeddings(out / "embeddings", ids, vectors)
    return out


def test_the_gate_scores_both_versions_on_this_runs_pairs_not_their_recorded_figures(store, tmp_path, name):
    """A champion whose recorded MRR is high (another protocol, other data) but whose embeddings rank
    this run's pairs at chance loses to a candidate that ranks them well, and the other way round."""
    import numpy as np

    rng = np.random.default_rng(0)
    ids = np.array([f"i{k}" for k in range(40)])
    good = np.zeros((40, 8), dtype=np.float32)
    good[np.arange(40), np.arange(40) // 5] = 1.0  # 8 clusters of 5
    good += 0.01 * rng.standard_normal(good.shape).astype(np.float32)
    good /= np.linalg.norm(good, axis=1, keepdims=True)
    noise = rng.standard_normal((40, 8)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    pairs = [(f"i{k}", f"i{(k // 5) * 5 + (k + 1) % 5}") for k in range(40)]  # within a cluster
    pairs += [("i1", "new7"), ("new7", "i2")]  # items the champion never saw: left out of the comparison

    v1 = make_version(store, tmp_path, name, 0.99, embeddings=(ids, noise))
    assert registry.gate(store.client(), name, v1, 0.99, margin=0.0)[0]
    ids_new, good_new = np.append(ids, "new7"), np.vstack([good, good[:1]])
    v2 = make_version(store, tmp_path, name, 0.30, embeddings=(ids_new, good_new))
    out = _run_dir(tmp_path, ids_new, good_new, pairs)
    promoted, reason = registry.gate(store.client(), name, v2, 0.30, margin=0.0, out=out)
    assert promoted, reason  # the recorded 0.30 < 0.99 would have kept the noise
    assert "beats champion version 1" in reason and "on the 40 of this run's 42 validation pairs" in reason
    gate = __import__("json").loads(tags_of(store, name, v2)["pinsage.gate"])
    assert gate["n_pairs"] == 40 and gate["candidate"] > 0.4 > 0.2 > gate["champion"]

    v3 = make_version(store, tmp_path, name, 0.99)  # recorded high, ranks at chance
    out = _run_dir(tmp_path, ids_new, np.vstack([noise, noise[:1]]), pairs)
    promoted, reason = registry.gate(store.client(), name, v3, 0.99, margin=0.0, out=out)
    assert not promoted and "does not beat champion version 2" in reason and "42 of this run's 42" in reason, reason
    assert str(champion(store, name).version) == v2


def _clusters(n=40, seed=0):
    """Item ids and unit vectors in 8 clusters of 5, and pairs within a cluster."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = np.array([f"i{k}" for k in range(n)])
    vectors = np.zeros((n, 8), dtype=np.float32)
    vectors[np.arange(n), np.arange(n) // 5] = 1.0
    vectors += 0.01 * rng.standard_normal(vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = [(f"i{k}", f"i{(k // 5) * 5 + (k + 1) % 5}") for k in range(n)]
    return ids, vectors, pairs


def test_a_run_on_other_data_never_takes_champion_from_a_champion_that_knows_none_of_its_items(
        store, tmp_path, name):
    """A run triggered on the wrong ``data`` under the same model name: the champion knows none of its
    validation items, so nothing can be compared, and it is refused, however high its own MRR."""
    ids, vectors, pairs = _clusters()
    v1 = make_version(store, tmp_path, name, 0.05, embeddings=(ids, vectors))
    assert registry.gate(store.client(), name, v1, 0.05, margin=0.0)[0]
    other = np.char.add("x", ids)  # another catalogue: no id in common
    v2 = make_version(store, tmp_path, name, 0.90, embeddings=(other, vectors))
    out = _run_dir(tmp_path, other, vectors, [(f"x{q}", f"x{t}") for q, t in pairs])
    promoted, reason = registry.gate(store.client(), name, v2, 0.90, margin=0.0, out=out)
    assert not promoted and f"champion version {v1} knows none of this run's validation pairs' items" in reason
    assert str(champion(store, name).version) == v1
    assert tags_of(store, name, v2)["pinsage.promotion"] == "rejected"
    assert tags_of(store, name, v2)["pinsage.promotion_reason"] == reason


def test_a_champion_with_neither_embeddings_nor_a_recorded_mrr_is_not_replaced_blindly(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, None)  # no run metric, no tag, no embeddings
    c.set_registered_model_alias(name, "champion", v1)  # e.g. set by hand
    ids, vectors, pairs = _clusters()
    v2 = make_version(store, tmp_path, name, 0.40, embeddings=(ids, vectors))
    out = _run_dir(tmp_path, ids, vectors, pairs)
    promoted, reason = registry.gate(c, name, v2, 0.40, margin=0.0, out=out)
    assert not promoted and "has no recorded validation MRR and no embeddings to score" in reason
    assert str(champion(store, name).version) == v1


def test_a_champion_without_embeddings_is_compared_by_recorded_mrr_and_the_reason_says_so(store, tmp_path, name):
    c = store.client()
    v1 = make_version(store, tmp_path, name, 0.10)  # an older version: no embeddings artifact
    registry.gate(c, name, v1, 0.10, margin=0.0)
    ids, vectors, pairs = _clusters()
    v2 = make_version(store, tmp_path, name, 0.30, embeddings=(ids, vectors))
    out = _run_dir(tmp_path, ids, vectors, pairs)
    promoted, reason = registry.gate(c, name, v2, 0.30, margin=0.0, out=out)
    assert promoted and "(0.1000)" in reason
    assert f"recorded validation MRRs, measured on different pairs: champion version {v1} serves no embeddings" \
        in reason
    assert "pinsage.gate" not in tags_of(store, name, v2)  # no like-with-like figures were made up


def test_a_refresh_is_refused_when_the_champion_moved_since_it_began(store, tmp_path, name):
    c = store.client()
    ids, vectors, pairs = _clusters()
    v1 = make_version(store, tmp_path, name, 0.30, embeddings=(ids, vectors))
    registry.gate(c, name, v1, 0.30, margin=0.0)
    v2 = make_version(store, tmp_path, name, 0.40, embeddings=(ids, vectors))  # a daily retrain took over
    c.set_registered_model_alias(name, "champion", v2)
    v3 = make_version(store, tmp_path, name, 0.30, embeddings=(ids, vectors))  # the refresh of v1
    out = _run_dir(tmp_path, ids, vectors, pairs)
    promoted, reason = registry.gate(c, name, v3, 0.30, margin=-0.05, out=out, parent=v1)
    assert not promoted, reason
    assert reason == (f"a refresh replaces only the version it refreshed: champion was version {v1} when this "
                      f"refresh began and is now version {v2}")
    assert str(champion(store, name).version) == v2
    # the same refresh while its parent is still the champion goes through the usual comparison
    v4 = make_version(store, tmp_path, name, 0.30, embeddings=(ids, vectors))
    promoted, reason = registry.gate(c, name, v4, 0.30, margin=-0.05, out=out, parent=v2)
    assert promoted and "beats champion version" in reason
