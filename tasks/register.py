"""Step 9, register: log the recommender, register a model version, and gate the ``champion`` alias.

The version's artifacts are exactly what was evaluated: the model fetched from the handed
``model_uri``, the embeddings exported from it and the index built over them (checked through their
``source.json``). The version is tagged ``pinsage.promotion=candidate`` when it is created; then the
gate decides:

* no champion yet -> the version becomes ``champion``;
* its validation MRR beats the champion's by more than ``promotion_margin`` -> ``champion`` moves;
* otherwise the alias stays and the version is tagged ``pinsage.promotion=rejected`` with
  ``pinsage.promotion_reason`` saying why.

Like with like: both MRRs are measured on *this run's* validation pairs (those whose items the
champion knows), the champion with the embeddings it serves (from the registry), so new data or a
change of evaluation protocol cannot promote or block a version by accident. The version tag
``pinsage.gate`` records both figures and the pair counts. Only a champion registered without
embeddings (an older version) is compared by its recorded validation MRR, and the reason says so; a
failure to fetch the embeddings (a 5xx, a timeout) fails the step, so Airflow retries it.

The gate refuses, with the reason on the version, when it cannot compare: a champion that knows none
of this run's validation items (a run on the wrong ``data`` under the same model name), a champion
with neither embeddings nor a recorded MRR, a missing or non-finite validation MRR. A refresh
(``parent``) replaces only the version it refreshed: if the champion moved meanwhile, it is refused.
Aliases and tags only; no stages.
Re-running the step finds the version it already registered for this MLflow run (no duplicate) and
keeps the decision already recorded on it. Two runs registering at once (two DAG runs, a backfill
beside the daily run) take the gate one at a time: read the champion, compare, move the alias under
an exclusive lock on ``<runs dir>/.locks/gate-<model>.lock`` (the runs directory is shared by every
worker already: steps hand each other paths in it).

    python -m tasks.register --run-dir RUN_DIR
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from tasks import browse, tracking
from tasks.provenance import sha256_file
from tasks.runs import read_step_record, require, runs_dir, safe_name, step_record_path
from tasks.step import main_for, stage_step

CHAMPION = "champion"
log = logging.getLogger("pinsage.tasks.register")


def _mrr(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def champion_version(c, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if tracking.is_connection_error(err):  # "no champion" only when the server says so
            raise
        return None


def champion_mrr(c, mv) -> float:
    """The champion's validation MRR: its run's metric (exact), else its version tag (4 decimals)."""
    mrr = math.nan
    if mv.run_id:
        mrr = _mrr(c.get_run(mv.run_id).data.metrics.get("validation_mrr"))
    return mrr if math.isfinite(mrr) else _mrr(mv.tags.get("validation_mrr"))


@contextlib.contextmanager
def gate_lock(name: str, timeout_s: float = 600.0):
    """Exclusive lock per registered model, so concurrent gates never both read "no champion"."""
    import fcntl

    path = runs_dir() / ".locks" / f"gate-{safe_name(name)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the champion gate of {name!r} stayed locked for {timeout_s:g}s "
                                       f"({path}); another register step is stuck") from None
                time.sleep(0.2)
        try:
            yield path
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def champion_embeddings(name: str, version: str):
    """(item ids, embeddings, priors) the registered version serves, from its artifacts.

    None only when the version holds no ``artifacts/embeddings`` (registered before they were logged).
    Any other failure (a 5xx once MLflow's own retries are spent, a timeout, an unreadable file)
    raises: the step fails and Airflow retries it, rather than decide on the weaker rule.
    """
    import tempfile

    import mlflow

    from pinsage.export.embeddings import read_embeddings, read_prior

    listed = mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{name}/{version}/artifacts")
    if not any(Path(f.path).name == "embeddings" and f.is_dir for f in listed):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts/embeddings", dst_path=tmp)
        return (*read_embeddings(local), read_prior(local))


def like_with_like(out: Path, name: str, champ) -> dict | None:
    """Candidate and champion scored on the same pairs: this run's validation pairs both can answer.

    The champion ranks with the embeddings it serves (its own catalogue), the candidate with this
    run's; pairs naming an item the champion does not know are left out. Returns ``{"candidate",
    "champion", "n_pairs", "n_total"}`` (MRRs), or None when the champion has no embeddings.
    """
    import pyarrow.parquet as pq

    from pinsage.eval.metrics import ranks_on_pairs
    from pinsage.export.embeddings import read_embeddings, read_prior
    from pinsage.run.layout import RunDir

    served = champion_embeddings(name, str(champ.version))
    if served is None:
        return None
    run = RunDir(out)
    pairs = pq.read_table(run.split("valid"), columns=["query_item", "target_item"]).to_pandas()
    known = set(np.asarray(served[0], dtype=str))
    common = pairs[pairs["query_item"].isin(known) & pairs["target_item"].isin(known)]
    result = {"n_pairs": int(len(common)), "n_total": int(len(pairs)), "candidate": math.nan, "champion": math.nan}
    if len(common):
        candidate = (*read_embeddings(run.embeddings), read_prior(run.embeddings))
        for who, (item_ids, vectors, prior) in (("candidate", candidate), ("champion", served)):
            ranks = ranks_on_pairs(item_ids, vectors, common["query_item"], common["target_item"], prior)
            result[who] = float(np.mean(1.0 / ranks))
    return result


def gate(c, name: str, version: str, candidate_mrr, margin: float, out: Path | None = None,
         scored: tuple[str, dict] | None = None, parent: str | None = None) -> tuple[bool, str]:
    """Decide and apply: move ``champion`` to ``version`` or tag why not. Returns (promoted, reason).

    With ``out`` (the candidate's run directory) the two versions are compared like with like
    (:func:`like_with_like`): a change of data or protocol between runs cannot promote or block a
    version by accident. Without it, or for a champion without embeddings, the recorded validation
    MRRs are compared. Runs under :func:`gate_lock`: concurrent register steps decide one after the other.
    ``scored``: (champion version, :func:`like_with_like` result) already computed by the caller; used
    only if that version is still the champion under the lock. ``parent``: the version a refresh
    started from; the refresh is refused unless that version is still the champion under the lock.
    """
    with gate_lock(name):
        return _gate(c, name, version, candidate_mrr, margin, out, scored, parent)


def _gate(c, name: str, version: str, candidate_mrr, margin: float, out: Path | None,
          scored: tuple[str, dict] | None = None, parent: str | None = None) -> tuple[bool, str]:
    version = str(version)
    mv = c.get_model_version(name, version)
    decided = mv.tags.get("pinsage.promotion")
    if decided in ("champion", "rejected"):  # a retry keeps the decision already taken
        return decided == "champion", mv.tags.get("pinsage.promotion_reason", "")
    mrr = _mrr(candidate_mrr)
    champ = champion_version(c, name)
    if champ is not None and str(champ.version) == version:
        promoted, reason = True, f"version {version} is already {CHAMPION}"
    elif parent is not None and (champ is None or str(champ.version) != str(parent)):
        now = f"version {champ.version}" if champ is not None else "no version"
        promoted, reason = False, (f"a refresh replaces only the version it refreshed: {CHAMPION} was version "
                                   f"{parent} when this refresh began and is now {now}")
    elif not math.isfinite(mrr):
        promoted, reason = False, (f"no valid evaluation (validation MRR {candidate_mrr!r}): "
                                   f"{CHAMPION} never moves without one")
    elif champ is None:
        promoted, reason = True, f"first evaluated version (validation MRR {mrr:.4f}): no {CHAMPION} yet"
    elif out is not None and (same := scored[1] if scored and scored[0] == str(champ.version)
                              else like_with_like(out, name, champ)) is not None:
        c.set_model_version_tag(name, version, "pinsage.gate", json.dumps({
            "champion_version": str(champ.version), **{k: (round(v, 6) if isinstance(v, float) else v)
                                                       for k, v in same.items()}}))
        on = (f"on the {same['n_pairs']} of this run's {same['n_total']} validation pairs that both versions "
              "can answer")
        if same["n_pairs"] == 0:
            promoted, reason = False, (f"{CHAMPION} version {champ.version} knows none of this run's validation "
                                       f"pairs' items, so the two cannot be compared: is this run's data the "
                                       f"catalogue {name!r} serves? Register another catalogue under another "
                                       "model name")
        elif same["candidate"] > same["champion"] + margin:
            promoted, reason = True, (f"validation MRR {same['candidate']:.4f} beats {CHAMPION} version "
                                      f"{champ.version} ({same['champion']:.4f}) {on}, by more than the margin "
                                      f"{margin:g}")
        else:
            promoted, reason = False, (f"validation MRR {same['candidate']:.4f} does not beat {CHAMPION} version "
                                       f"{champ.version} ({same['champion']:.4f}) {on}, by more than the margin "
                                       f"{margin:g}")
    else:
        cm = champion_mrr(c, champ)
        # the weaker rule, said on the record: figures from different pairs, possibly another protocol
        how = ("recorded validation MRRs, measured on different pairs: " + (
            f"{CHAMPION} version {champ.version} serves no embeddings to rank this run's pairs with"
            if out is not None else "no run directory to score both versions on"))
        if not math.isfinite(cm):
            promoted, reason = False, (f"validation MRR {mrr:.4f}; {CHAMPION} version {champ.version} has no "
                                       "recorded validation MRR and no embeddings to score, so the two cannot be "
                                       f"compared; move the alias by hand if this version should serve")
        elif mrr > cm + margin:
            promoted, reason = True, (f"validation MRR {mrr:.4f} beats {CHAMPION} version {champ.version} "
                                      f"({cm:.4f}) by more than the margin {margin:g} ({how})")
        else:
            promoted, reason = False, (f"validation MRR {mrr:.4f} does not beat {CHAMPION} version "
                                       f"{champ.version} ({cm:.4f}) by more than the margin {margin:g} ({how})")
    if promoted:
        c.set_registered_model_alias(name, CHAMPION, version)
        if champ is not None and str(champ.version) != version:
            c.set_model_version_tag(name, str(champ.version), "pinsage.replaced_by", version)
    c.set_model_version_tag(name, version, "pinsage.promotion_reason", reason)
    c.set_model_version_tag(name, version, "pinsage.promotion", "champion" if promoted else "rejected")
    log.info("gate: version %s %s: %s", version, "promoted" if promoted else "not promoted", reason)
    return promoted, reason


def existing_version(c, name: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        found = c.search_model_versions(f"name = '{tracking.sql_quote(name)}' and run_id = '{run_id}'")
    except MlflowException as err:
        if tracking.is_connection_error(err):  # a blip must not read as "not registered yet": a second version
            raise
        return None
    return sorted(found, key=lambda v: int(v.version))[0] if found else None


def _ready(model_id: str) -> bool:
    import mlflow
    from mlflow.entities import LoggedModelStatus

    try:
        return mlflow.get_logged_model(model_id).status == LoggedModelStatus.READY
    except Exception:
        return False


def _ensure_registered_model(c, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name)
        except MlflowException:
            c.get_registered_model(name)  # created concurrently
    browse.describe_registered_model(c, name)


def run(ref: dict, model_uri: str | None = None, embeddings_dir: str | None = None,
        index_dir: str | None = None, metrics: str | None = None) -> dict:
    import mlflow
    from mlflow.entities import LoggedModelOutput

    from pinsage.export.index import answers_sha256

    from tasks import mlflow_model

    settings = ref["settings"]
    name, margin = settings["model_name"], float(settings["promotion_margin"])
    if model_uri is None or index_dir is None or embeddings_dir is None:
        rec = read_step_record(ref, "index")
        model_uri, index_dir = model_uri or rec["model_uri"], index_dir or rec["index_dir"]
        embeddings_dir = embeddings_dir or rec["embeddings_dir"]

    checked: dict = {}

    def same_model(s) -> None:  # the embeddings and the index come from the handed model
        sha = checked["model_sha256"] = sha256_file(require(s.run.export_model / "model.pt", "exported model"))
        for what, d in (("embeddings", s.run.embeddings), ("index", s.run.index)):
            src = json.loads(require(d / "source.json", f"{what} source").read_text())
            if (src["model_uri"], src["model_sha256"]) != (model_uri, sha):
                raise ValueError(f"the {what} in {d} were built from {src}, not from {model_uri} "
                                 f"(sha256 {sha}); re-run export and index")

    with stage_step(ref, "register", handed={"embeddings": embeddings_dir, "index": index_dir,
                                             "metrics": metrics}, check=same_model) as s:
        c, rid, run_dir, out = s.client, s.mlflow_run_id, s.run, s.run.root
        m = run_dir.read_json(run_dir.metrics)
        validation_mrr = _mrr(m.get("validation", {}).get("methods", {}).get("pinsage", {}).get("mrr"))
        test_mrr = _mrr(m.get("methods", {}).get("pinsage", {}).get("mrr"))
        emb, idx, model_dir, sha = run_dir.embeddings, run_dir.index, run_dir.export_model, checked["model_sha256"]
        _ensure_registered_model(c, name)
        mv = existing_version(c, name, rid)
        if mv is None:
            run_tags = c.get_run(rid).data.tags
            model_id = browse.logged_model(c, ref)  # created by evaluate, with the evaluation's metrics
            if not _ready(model_id):  # not filled yet, or an earlier attempt died while filling it
                # no active run: the metrics are on the model already and must not be copied again
                mlflow_model.log_recommender(
                    name=name, model_id=model_id, model_dir=str(model_dir), embeddings_dir=str(emb),
                    index_dir=str(idx), items=str(run_dir.items),
                    example_item_id=str(run_dir.item_ids()[0]))
                c.log_outputs(rid, models=[LoggedModelOutput(model_id, step=0)])
            tags = {"pinsage.promotion": "candidate", "validation_mrr": f"{validation_mrr:.4f}",
                    "test_mrr": f"{test_mrr:.4f}", "model_sha256": sha, "source_model_uri": model_uri,
                    "answers_sha256": answers_sha256(idx),
                    "data_sha256": ref.get("data_sha256", ""), "airflow.dag_id": ref["dag_id"],
                    "airflow.run_id": ref["run_key"], "git_commit": run_tags.get("git_commit", "")}
            mv = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
        version = str(mv.version)
        promoted, reason = gate(c, name, version, validation_mrr, margin, out)
        run = c.get_run(rid)
        report = (f"{run.info.artifact_uri}/report.html"
                  if step_record_path(ref, "evaluate").is_file()
                  and read_step_record(ref, "evaluate").get("report") else None)
        c.update_model_version(name, version, description=browse.version_description(
            promoted=promoted, reason=reason, metrics=m, ref=ref,
            commit=run.data.tags.get("git_commit", ""), report_uri=report))
        c.set_tag(rid, "pinsage.model_version", version)
        c.set_tag(rid, "pinsage.promoted", str(promoted).lower())
        c.set_tag(rid, "pinsage.promotion_reason", reason)
        s.result = {"model_name": name, "version": version, "model_uri": f"models:/{name}/{version}",
                    "promoted": promoted, "reason": reason, "validation_mrr": validation_mrr,
                    "mlflow_run_id": rid}
    c.set_terminated(rid, status="FINISHED")
    return s.result


main = main_for(run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
