#!/usr/bin/env bash
# One command on a fresh machine: install the requirements, run the pinsage_daily DAG once on the
# bundled MovieLens data with its embedded defaults -- Airflow on SQLite (`airflow dags test`), MLflow
# on a local SQLite store, no server started -- then print where to look.
#
#   bash scripts/demo.sh                      # defaults (ml-latest-small, 8 epochs: ~3-5 min on 2 cores)
#   bash scripts/demo.sh '{"epochs": 2}'      # any DAG parameter as a JSON conf
#
# Everything it writes lives under .pinsage/ (git-ignored): airflow/ (AIRFLOW_HOME), mlflow.db and
# mlartifacts/ (MLflow), runs/ (one directory per DAG run). PINSAGE_SKIP_INSTALL=1 skips pip;
# PINSAGE_STATE_DIR puts that state elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PY="${PYTHON:-python3}"
CONF="${1:-}"

if [ "${PINSAGE_SKIP_INSTALL:-0}" != "1" ]; then
  echo "==> installing requirements (pip install -r requirements.txt -c constraints.txt) and the project (-e .)"
  "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi

# From here on, what the demo writes (Airflow's and MLflow's databases, the runs) is readable by this
# user only (the installed packages above keep the usual modes).
umask 077
STATE="${PINSAGE_STATE_DIR:-$ROOT/.pinsage}"
export AIRFLOW_HOME="$STATE/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=2
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export MLFLOW_TRACKING_URI="sqlite:///$STATE/mlflow.db"
export PINSAGE_MLFLOW_ARTIFACT_ROOT="$STATE/mlartifacts"
export PINSAGE_RUNS_DIR="$STATE/runs"
mkdir -p "$AIRFLOW_HOME"

echo "==> airflow db migrate (SQLite: $AIRFLOW_HOME/airflow.db) and the pool pinsage_train"
if ! { "$PY" -m airflow db migrate && "$PY" -m airflow pools set pinsage_train 1 \
         "PinSage training: one at a time"; } >"$AIRFLOW_HOME/db-migrate.log" 2>&1; then
  tail -n 40 "$AIRFLOW_HOME/db-migrate.log"; exit 1
fi

LOG="$STATE/demo-dags-test.log"
echo "==> airflow dags test pinsage_daily ${CONF:+-c '$CONF'} (full log: $LOG)"
set +e
if [ -n "$CONF" ]; then
  "$PY" -m airflow dags test pinsage_daily -c "$CONF" >"$LOG" 2>&1 &
else
  "$PY" -m airflow dags test pinsage_daily >"$LOG" 2>&1 &
fi
PID=$!
# progress: the steps' own messages
tail -n +1 -f "$LOG" --pid="$PID" 2>/dev/null \
  | grep --line-buffered -E "\[pinsage\.tasks[^]]*\]|\[DAG TEST\] (starting|end) task|DagRun Finished" \
  | sed -u -E 's/^[0-9T:.-]+Z? *\[[a-z]+ *\] *//; s/ *\[airflow[^]]*\] *loc=[^ ]*//; s/ loc=[^ ]*//'
wait "$PID"
RC=$?
set -e
if [ "$RC" != "0" ] || ! grep -q "state=success" "$LOG"; then
  echo "!! the DAG run failed; the end of $LOG:"; tail -n 80 "$LOG"; exit 1
fi

echo "==> what MLflow recorded"
"$PY" - <<'PY'
import mlflow
import pandas as pd
from mlflow import MlflowClient

c = MlflowClient()
exp = c.get_experiment_by_name("pinsage")
run = c.search_runs([exp.experiment_id], "tags.`airflow.dag_id` = 'pinsage_daily'",
                    order_by=["attributes.start_time DESC"], max_results=1)[0]
rid = run.info.run_id

def files(path=None):
    for f in c.list_artifacts(rid, path):
        yield from files(f.path) if f.is_dir else [f.path]

tags, metrics = run.data.tags, run.data.metrics
print(f"MLflow run {rid} ({run.info.status}) of Airflow run {tags.get('airflow.run_id')}")
print(f"  data sha256 {tags.get('data_sha256', '')[:16]}..., git commit {tags.get('git_commit', '')[:12]}")
print(f"  validation MRR {metrics.get('validation_mrr', float('nan')):.4f}, test MRR {metrics.get('test_mrr', float('nan')):.4f}")
print(f"  artifacts: {', '.join(sorted(files()))}")
name = run.data.params.get("settings.model_name", "pinsage")
print(f"  model version {name}/{tags.get('pinsage.model_version')}: "
      f"{'champion' if tags.get('pinsage.promoted') == 'true' else 'not promoted'} -- {tags.get('pinsage.promotion_reason')}")
model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
champion = c.get_model_version_by_alias(name, "champion").version
query = "1"
out = model.predict(pd.DataFrame({"item_id": [query]}), params={"k": 5})
if out["error"].notna().any():  # not MovieLens (unknown item "1"): the catalogue's first item
    query = str(model.unwrap_python_model().catalogue.item_ids[0])
    out = model.predict(pd.DataFrame({"item_id": [query]}), params={"k": 5})
print(f"models:/{name}@champion (version {champion}) -> items related to item {query!r}:")
print(out[["rank", "item_id", "title", "score"]].to_string(index=False))
PY

cat <<EOF

==> where to look
  MLflow UI:   mlflow ui --backend-store-uri "sqlite:///$STATE/mlflow.db" --host 127.0.0.1 --port 5000   # http://127.0.0.1:5000 ("Model training" view)
  Load model:  MLFLOW_TRACKING_URI="sqlite:///$STATE/mlflow.db" python -c "import mlflow; m = mlflow.pyfunc.load_model('models:/pinsage@champion')"
  Run files:   $STATE/runs/pinsage_daily/
  Airflow UI:  AIRFLOW_HOME="$AIRFLOW_HOME" AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags" \\
               MLFLOW_TRACKING_URI="sqlite:///$STATE/mlflow.db" PINSAGE_RUNS_DIR="$STATE/runs" \\
               AIRFLOW__API__HOST=127.0.0.1 airflow standalone   # http://127.0.0.1:8080: DAG pinsage_daily, Trigger
EOF
