"""The model registry, as every step meets it: model URIs, provenance checks, the ``champion`` gate and
registering a version. The register and refresh steps both use it; neither reaches into the other.

**The gate** decides whether a registered version takes ``champion``:

* no champion yet -> the version becomes ``champion``;
* its validation MRR beats the champion's by more than ``margin`` -> ``champion`` moves;
* otherwise the alias stays and the version is tagged ``pinsage.promotion=rejected`` with
  ``pinsage.promotion_reason`` saying why.

Like with like: both MRRs are measured on the candidate run's validation pairs (those whose items
the champion knows), the champion with the embeddings it serves (from the registry), so new data or a
change of evaluation protocol cannot promote or block a version by accident. The version tag
``pinsage.gate`` records both figures and the pair counts. Only a champion registered without
embeddings (an older version) is compared by its recorded validation MRR, and the reason says so; a
failure to fetch the embeddings (a 5xx, a timeout) raises, so Airflow retries the step.

The gate refuses, with the reason on the version, when it cannot compare: a champion that knows none
of the run's validation items (a run on the wrong ``data`` under the same model name), a champion
with neither embeddings nor a recorded MRR, a missing or non-finite validation MRR. A refresh
(``parent``) replaces only the version it refreshed: if the champion moved meanwhile, it is refused.
A retry keeps the decision already recorded on the version. Two steps registering at once take the
gate one at a time: read the champion, compare, move the alias under an exclusive lock on
``<runs dir>/.locks/gate-<model>.lock`` (the runs directory is shared by every worker already: steps
hand each other paths in it). Aliases and tags only; no stages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import yaml
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException

from pinsage.eval.metrics import ranks_on_pairs
from pinsage.export.embeddings import read_embeddings, read_prior
from pinsage.export.index import answers_sha256
from pinsage.run.layout import RunDir
from pinsage.util.io import atomic_dir, write_json
from tasks import mlflow_ui, tracking
from tasks.runs import require, runs_dir, safe_name

CHAMPION = "champion"
MODEL_FILES = ("model.pt", "model_config.json")
log = logging.getLogger("pinsage.tasks.registry")


# -- model URIs and provenance -------------------------------------------------------------------

def version_artifact(version_uri: str, key: str, dst: str | Path) -> Path:
    """The pyfunc artifact ``key`` (model_dir, embeddings, index, items) of ``models:/NAME/VERSION``,
    downloaded under ``dst``; ValueError when the version is not a PinSage recommender."""
    mlmodel = mlflow.artifacts.download_artifacts(f"{version_uri}/MLmodel", dst_path=str(Path(dst) / ".meta"))
    stored = (yaml.safe_load(Path(mlmodel).read_text()).get("flavors", {}).get("python_function", {})
              .get("artifacts", {}))  # key -> {"path": "artifacts/<name>"}
    if key not in stored:
        raise ValueError(f"{version_uri} is not a PinSage recommender (no {key} artifact)")
    return Path(mlflow.artifacts.download_artifacts(f"{version_uri}/{stored[key]['path']}", dst_path=str(dst)))


def fetch_model(model_uri: str, dest: str | Path) -> Path:
    """Materialise model.pt + model_config.json of ``model_uri`` in ``dest`` (atomically).

    ``runs:/<run_id>/checkpoint`` (what the train step logged), ``models:/NAME/VERSION`` (a registered
    version's ``model_dir``) or a local directory holding the two files.
    """
    dest = Path(dest)
    with atomic_dir(dest) as tmp:
        if "://" not in model_uri and ":/" not in model_uri:
            src = Path(model_uri)
        else:
            tracking.configure_mlflow()
            if model_uri.startswith("models:/"):
                src = version_artifact(model_uri.rstrip("/"), "model_dir", tmp / "download")
            else:
                src = tmp / "download"
                for name in MODEL_FILES:
                    mlflow.artifacts.download_artifacts(artifact_uri=f"{model_uri.rstrip('/')}/{name}",
                                                        dst_path=str(src))
        for name in MODEL_FILES:
            shutil.copy2(require(src / name, f"{model_uri}:"), tmp / name)
        shutil.rmtree(tmp / "download", ignore_errors=True)
    return dest


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` so lineage names a fixed version."""
    if model_uri.startswith("models:/") and "@" in model_uri:
        name, _, alias = model_uri[len("models:/"):].rstrip("/").partition("@")
        version = tracking.client().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}"
    return model_uri


SOURCE = "source.json"  # beside embeddings and an index: the model URI and model.pt's sha256 they came from


def write_source(directory: Path, model_uri: str, model_sha256: str, **more) -> None:
    write_json(directory / SOURCE, {"model_uri": model_uri, "model_sha256": model_sha256, **more})


def check_source(directory: Path, what: str, model_uri: str, model_sha256: str) -> None:
    """Refuse ``directory`` (embeddings, an index) unless it was built from the handed model."""
    src = json.loads(require(directory / SOURCE, f"{what} source").read_text())
    if (src["model_uri"], src["model_sha256"]) != (model_uri, model_sha256):
        raise ValueError(f"the {what} in {directory} were built from {src}, not from the handed model "
                         f"{model_uri} (sha256 {model_sha256}); re-run export and index with that model")


# -- the champion ----------------------------------------------------------------------------------

def as_mrr(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def champion_version(c, name: str):
    """The version ``champion`` names, or None when the registry says there is none."""
    try:
        return c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if tracking.is_connection_error(err):  # "no champion" only when the server says so
            raise
        return None


def champion_mrr(c, mv) -> float:
    """The champion's validation MRR: its run's metric (exact), else its version tag (4 decimals)."""
    mrr = as_mrr(c.get_run(mv.run_id).data.metrics.get("validation_mrr")) if mv.run_id else math.nan
    return mrr if math.isfinite(mrr) else as_mrr(mv.tags.get("validation_mrr"))


@contextlib.contextmanager
def gate_lock(name: str, timeout_s: float = 600.0):
    """Exclusive lock per registered model, so concurrent gates never both read "no champion"."""
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
    listed = mlflow.artifacts.list_artifacts(artifact_uri=f"models:/{name}/{version}/artifacts")
    if not any(Path(f.path).name == "embeddings" and f.is_dir for f in listed):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/artifacts/embeddings", dst_path=tmp)
        return (*read_embeddings(local), read_prior(local))


def like_with_like(out: Path, name: str, champ) -> dict | None:
    """Candidate and champion scored on the same pairs: the run's validation pairs both can answer.

    The champion ranks with the embeddings it serves (its own catalogue), the candidate with the
    run's; pairs naming an item the champion does not know are left out. Returns ``{"candidate",
    "champion", "n_pairs", "n_total"}`` (MRRs), or None when the champion has no embeddings.
    """
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
    (:func:`like_with_like`). Without it, or for a champion without embeddings, the recorded
    validation MRRs are compared. Runs under :func:`gate_lock`. ``scored``: (champion version,
    :func:`like_with_like` result) already computed by the caller; used only if that version is still
    the champion under the lock. ``parent``: the version a refresh started from; the refresh is
    refused unless that version is still the champion under the lock.
    """
    with gate_lock(name):
        return _gate(c, name, str(version), candidate_mrr, margin, out, scored, parent)


def _beats(mine: float, theirs: float, champ_version, margin: float, how: str) -> tuple[bool, str]:
    promoted = mine > theirs + margin
    return promoted, (f"validation MRR {mine:.4f} {'beats' if promoted else 'does not beat'} {CHAMPION} version "
                      f"{champ_version} ({theirs:.4f}){how} by more than the margin {margin:g}")


def _decide(c, name: str, version: str, candidate_mrr, margin: float, out, scored, parent, champ):
    mrr = as_mrr(candidate_mrr)
    if champ is not None and str(champ.version) == version:
        return True, f"version {version} is already {CHAMPION}"
    if parent is not None and (champ is None or str(champ.version) != str(parent)):
        now = f"version {champ.version}" if champ is not None else "no version"
        return False, (f"a refresh replaces only the version it refreshed: {CHAMPION} was version {parent} "
                       f"when this refresh began and is now {now}")
    if not math.isfinite(mrr):
        return False, f"no valid evaluation (validation MRR {candidate_mrr!r}): {CHAMPION} never moves without one"
    if champ is None:
        return True, f"first evaluated version (validation MRR {mrr:.4f}): no {CHAMPION} yet"
    same = None
    if out is not None:
        same = scored[1] if scored and scored[0] == str(champ.version) else like_with_like(out, name, champ)
    if same is not None:
        c.set_model_version_tag(name, version, "pinsage.gate", json.dumps({
            "champion_version": str(champ.version),
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in same.items()}}))
        if same["n_pairs"] == 0:
            return False, (f"{CHAMPION} version {champ.version} knows none of this run's validation pairs' items, "
                           f"so the two cannot be compared: is this run's data the catalogue {name!r} serves? "
                           "Register another catalogue under another model name")
        on = (f" on the {same['n_pairs']} of this run's {same['n_total']} validation pairs "
              "that both versions can answer,")
        return _beats(same["candidate"], same["champion"], champ.version, margin, on)
    cm = champion_mrr(c, champ)
    if not math.isfinite(cm):
        return False, (f"validation MRR {mrr:.4f}; {CHAMPION} version {champ.version} has no recorded validation "
                       "MRR and no embeddings to score, so the two cannot be compared; move the alias by hand "
                       "if this version should serve")
    # the weaker rule, said on the record: figures from different pairs, possibly another protocol
    why = (f"{CHAMPION} version {champ.version} serves no embeddings to rank this run's pairs with"
           if out is not None else "no run directory to score both versions on")
    promoted, reason = _beats(mrr, cm, champ.version, margin, "")
    return promoted, f"{reason} (recorded validation MRRs, measured on different pairs: {why})"


def _gate(c, name: str, version: str, candidate_mrr, margin: float, out: Path | None,
          scored: tuple[str, dict] | None = None, parent: str | None = None) -> tuple[bool, str]:
    mv = c.get_model_version(name, version)
    decided = mv.tags.get("pinsage.promotion")
    if decided in ("champion", "rejected"):  # a retry keeps the decision already taken
        return decided == "champion", mv.tags.get("pinsage.promotion_reason", "")
    champ = champion_version(c, name)
    promoted, reason = _decide(c, name, version, candidate_mrr, margin, out, scored, parent, champ)
    if promoted:
        c.set_registered_model_alias(name, CHAMPION, version)
        if champ is not None and str(champ.version) != version:
            c.set_model_version_tag(name, str(champ.version), "pinsage.replaced_by", version)
    c.set_model_version_tag(name, version, "pinsage.promotion_reason", reason)
    c.set_model_version_tag(name, version, "pinsage.promotion", "champion" if promoted else "rejected")
    log.info("gate: version %s %s: %s", version, "promoted" if promoted else "not promoted", reason)
    return promoted, reason


# -- registering a version -----------------------------------------------------------------------

def existing_version(c, name: str, run_id: str):
    """The version already registered from ``run_id`` (a retried step registers no second one)."""
    try:
        found = c.search_model_versions(f"name = '{tracking.sql_quote(name)}' and run_id = '{run_id}'")
    except MlflowException as err:
        if tracking.is_connection_error(err):  # a blip must not read as "not registered yet": a second version
            raise
        return None
    return sorted(found, key=lambda v: int(v.version))[0] if found else None


def _ready(model_id: str) -> bool:
    try:
        return mlflow.get_logged_model(model_id).status == LoggedModelStatus.READY
    except Exception:
        return False


def ensure_registered_model(c, name: str) -> None:
    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name)
        except MlflowException:
            c.get_registered_model(name)  # created concurrently
    mlflow_ui.describe_registered_model(c, name)


def register_version(c, name: str, run_id: str, model_id: str, run: RunDir, tags: dict[str, str],
                     example_item_id: str):
    """The version of ``name`` registered from MLflow run ``run_id``: found again on a retry, else the
    recommender is logged into the logged model ``model_id`` (the run directory's network,
    embeddings, index with its answer table, titles; MLflow loads it and answers ``example_item_id``
    before it is registered) and registered with ``tags`` plus its answer table's sha256."""
    from tasks import mlflow_model  # here, not at the top: importing the model-from-code file calls set_model

    ensure_registered_model(c, name)
    mv = existing_version(c, name, run_id)
    if mv is not None:
        return mv
    if not _ready(model_id):  # not filled yet, or an earlier attempt died while filling it
        mlflow_model.log_recommender(name=name, model_id=model_id, model_dir=str(run.export_model),
                                     embeddings_dir=str(run.embeddings), index_dir=str(run.index),
                                     items=str(run.items), example_item_id=example_item_id)
        c.log_outputs(run_id, models=[LoggedModelOutput(model_id, step=0)])
    return mlflow.register_model(f"models:/{model_id}", name,
                                 tags={**tags, "answers_sha256": answers_sha256(run.index)})
