"""DAG integrity: parses cleanly in a fresh process, wires the expected tasks, touches nothing heavy.

And the DAG really runs: ``airflow dags test`` on a clean AIRFLOW_HOME with SQLite and a small config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT, community_data, small_params, subprocess_env

EXPECTED_EDGES = {
    ("prepare", "features"), ("prepare", "graph"), ("graph", "neighbors"), ("features", "train"),
    ("neighbors", "train"), ("train", "export"), ("export", "index"), ("index", "evaluate"),
    ("index", "register"), ("evaluate", "register"), ("register", "announce_champion"),
}
HEAVY = ("torch", "mlflow", "faiss", "pandas", "numpy", "pyarrow", "gensim", "numba", "ray", "sqlalchemy.engine",
         "pinsage", "tasks", "requests")

PARSE = textwrap.dedent("""
    import copy, json, socket, sys
    from datetime import timedelta

    def refuse(*a, **k):
        raise AssertionError("network access while parsing the DAG")
    socket.socket.connect = refuse
    socket.create_connection = refuse
    before = set(sys.modules)
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag
    loaded_by_airflow = set(sys.modules) - before
    before_dags = set(sys.modules)
    bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]))  # as the dag-processor parses
    new = set(sys.modules) - before_dags
    dag = bag.dags.get("pinsage_daily")
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dags),
           "new_modules": sorted(new)}
    if dag is not None:
        out.update({
            "schedule": str(dag.schedule) + " " + repr(dag.timetable), "catchup": dag.catchup, "tags": sorted(dag.tags),
            "doc_md": dag.doc_md or "", "description": dag.description or "", "max_active_runs": dag.max_active_runs,
            "edges": sorted([t.task_id, d] for t in dag.tasks for d in t.downstream_task_ids),
            "tasks": {t.task_id: {"retries": t.retries, "backoff": float(t.retry_exponential_backoff or 0),
                                  "retry_delay": t.retry_delay.total_seconds(),
                                  "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                                  "pool": t.pool, "outlets": [getattr(o, "name", str(o)) for o in t.outlets],
                                  "on_failure": [type(cb).__name__ for cb in
                                                 (t.on_failure_callback if isinstance(t.on_failure_callback, list)
                                                  else [t.on_failure_callback] if t.on_failure_callback else [])]}
                      for t in dag.tasks},
            "params": {k: {"default": dag.params.get_param(k).value, "schema": dag.params.get_param(k).schema,
                           "description": dag.params.get_param(k).description} for k in dag.params},
        })
        bad = []
        for conf in ({"epochs": 0}, {"device": "tpu"}, {"learning_rate": 0}, {"promotion_margin": -0.1},
                     {"hidden_dim": "big"}, {"engine": "spark"}):
            try:
                merged = copy.deepcopy(dag.params)
                merged.update(conf)
                merged.validate()
            except Exception:
                bad.append(True)
            else:
                bad.append(False)
        out["rejected"] = bad
        merged = copy.deepcopy(dag.params)
        merged.update({"epochs": 2, "data": "/x", "overrides": {"a": 1}, "max_timestamp": 5})
        merged.validate()
    consumer = bag.dags.get("pinsage_champion_reload")
    if consumer is not None:
        condition = consumer.timetable.asset_condition
        out["consumer"] = {
            "timetable": type(consumer.timetable).__name__, "condition": type(condition).__name__,
            "assets": [[a.name, a.uri] for a in getattr(condition, "objects", [])],
            "max_active_runs": consumer.max_active_runs, "paused_upon_creation": consumer.is_paused_upon_creation,
            "doc_md": consumer.doc_md or "", "tags": sorted(consumer.tags),
            "tasks": {t.task_id: {"retries": t.retries, "timeout": t.execution_timeout.total_seconds(),
                                  "downstream": sorted(t.downstream_task_ids),
                                  "on_failure": [type(cb).__name__ for cb in t.on_failure_callback]}
                      for t in consumer.tasks}}
    out["announced"] = {dag_id: [[o.name, o.uri] for o in bag.dags[dag_id].get_task("announce_champion").outlets]
                        for dag_id in ("pinsage_daily", "pinsage_refresh") if dag_id in bag.dags}
    print("@@PARSED@@" + json.dumps(out, default=str))
""")


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = subprocess_env({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                          "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                          # a database that does not exist: parsing must not need one
                          "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://nobody@127.0.0.1:1/none"})
    p = subprocess.run([sys.executable, "-c", PARSE, str(ROOT / "dags")], env=env, cwd=home,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout[p.stdout.rindex("@@PARSED@@") + len("@@PARSED@@"):])


def test_the_dag_parses_without_import_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dag_ids"] == ["pinsage_champion_reload", "pinsage_daily", "pinsage_refresh"]


# The parameter table the forms are generated from: stdlib only, the one part of the project a DAG
# file may import while it is parsed.
PARSE_TIME = {"pinsage", "pinsage.run", "pinsage.run.params", "pinsage.run.param", "pinsage.run.dotted", "tasks",
              "tasks.handovers"}


def test_parsing_imports_nothing_heavy_and_touches_no_network(parsed):
    heavy = [m for m in parsed["new_modules"] if m.split(".")[0] in {h.split(".")[0] for h in HEAVY}
             and not m.startswith("sqlalchemy") and m not in PARSE_TIME]
    assert heavy == []
    assert "pinsage.run.params" in parsed["new_modules"]  # the forms do come from the table


def test_the_expected_tasks_and_edges(parsed):
    assert set(parsed["tasks"]) == {"prepare", "features", "graph", "neighbors", "train", "export", "index",
                                    "evaluate", "register", "announce_champion"}
    assert {tuple(e) for e in parsed["edges"]} == EXPECTED_EDGES


def test_the_dags_edges_are_the_handovers_tasks_flow_runs(parsed):
    """What each task reads (its upstream tasks) is what tasks.handovers hands its step, which is
    also what tasks.flow hands it in one process: the wiring is written once."""
    from tasks.handovers import HANDED, ORDER, upstream

    assert {(source, step) for step in HANDED for source in upstream(step)} | {("register", "announce_champion")} \
        == {tuple(e) for e in parsed["edges"]}
    assert ORDER[0] == "prepare" and all(ORDER.index(u) < ORDER.index(s) for s in HANDED for u in upstream(s))


def test_schedule_retries_timeouts_tags_and_docs(parsed):
    assert "0 0 * * *" in parsed["schedule"] or "@daily" in parsed["schedule"]
    assert parsed["catchup"] is False
    assert parsed["max_active_runs"] == 1
    assert "pinsage" in parsed["tags"]
    assert "champion" in parsed["doc_md"] and "ray" in parsed["doc_md"].lower()
    for task_id, t in parsed["tasks"].items():
        assert t["retries"] >= 2, task_id
        assert t["backoff"] > 0 and t["retry_delay"] > 0, task_id
        assert t["timeout"] and t["timeout"] <= 6 * 3600, task_id


def test_params_render_a_typed_bounded_described_form(parsed):
    params = parsed["params"]
    for name in ("data", "epochs", "hidden_dim", "output_dim", "top_t", "walks_per_item", "learning_rate", "seed",
                 "device", "promotion_margin", "engine", "ray_address"):
        assert name in params, name
        assert params[name]["description"], name
        assert "type" in params[name]["schema"], name
    for name in ("epochs", "hidden_dim", "output_dim", "top_t", "walks_per_item"):
        assert params[name]["schema"]["type"] == "integer" and params[name]["schema"]["minimum"] >= 1, name
    assert params["promotion_margin"]["schema"]["maximum"] == 1  # an MRR difference
    assert params["device"]["schema"]["enum"] == ["auto", "cpu", "cuda"]
    assert params["engine"]["default"] == "local"
    assert parsed["rejected"] == [True] * 6  # the form refuses out-of-range values


def _ui_required(schema: dict) -> bool:
    """Airflow UI's rule (FlexibleForm/isParamRequired): a typed field is required unless its type admits null."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_every_param_passes_the_trigger_forms_own_rules_with_its_default(parsed):
    """What the UI's trigger form does before it enables *Trigger*, for every parameter's default.

    The form marks a section in error (and disables the button) when a required field (see
    ``_ui_required``) holds null or ""; the server then validates the value against the schema.
    A parameter whose default is empty must admit null (``type=["null", ...]``), not be ``""``.
    """
    import jsonschema

    for name, p in parsed["params"].items():
        schema, default = p["schema"], p["default"]
        if _ui_required(schema):
            assert default not in (None, ""), f"{name}: the form treats it as required but its default is empty"
        jsonschema.validate(default, {k: v for k, v in schema.items() if k not in ("title", "section")})
        assert schema.get("title") and p["description"], name


def test_the_shipped_ui_still_applies_the_rule_the_check_above_ports():
    """The rule ported in ``_ui_required`` is the installed UI's: its bundle tests value null/undefined/""."""
    import re
    from pathlib import Path

    import airflow

    bundle = "".join(f.read_text(errors="replace") for f in
                     (Path(airflow.__file__).parent / "ui" / "dist" / "assets").glob("index-*.js"))
    assert re.search(r"\.value===null\|\|\w+\.value===void 0\|\|\w+\.value===``", bundle)
    assert re.search(r"\.includes\(`null`\)", bundle)
    assert "Run Parameters" in bundle  # the default (open) section of the form


def test_the_form_is_grouped_into_sections(parsed):
    params = parsed["params"]
    sections = {name: p["schema"].get("section") for name, p in params.items()}
    # the data parameters sit in the form's default section ("Run Parameters"), which the UI opens
    assert {n for n, sec in sections.items() if sec is None} == {"data", "max_timestamp", "protocol", "vgg_weights",
                                                                        "word2vec_vectors"}
    assert {sec for sec in sections.values() if sec} == {"Model", "Training", "Registry", "Engine", "Advanced"}
    assert sections["epochs"] == "Training" and sections["promotion_margin"] == "Registry"
    assert sections["engine"] == sections["ray_address"] == "Engine" and sections["overrides"] == "Advanced"
    assert list(params)[0] == "data"  # the open section comes first


def test_description_failure_notification_pool_and_champion_asset(parsed):
    assert "champion" in parsed["description"] and "MLflow" in parsed["description"]
    for task_id, t in parsed["tasks"].items():
        assert t["on_failure"] == ["FailureNotifier"], task_id
    assert parsed["tasks"]["train"]["pool"] == "pinsage_train"
    assert {t["pool"] for k, t in parsed["tasks"].items() if k != "train"} == {"default_pool"}
    assert parsed["tasks"]["announce_champion"]["outlets"] == ["pinsage_champion"]
    assert all(t["outlets"] == [] for k, t in parsed["tasks"].items() if k != "announce_champion")


def test_the_reload_dag_is_scheduled_on_the_asset_the_producers_update(parsed):
    """``pinsage_champion_reload`` listens to the very asset (name and URI) both producers' outlets carry:
    ``Asset("pinsage_champion")`` would be another asset (its URI is its name) and never fire."""
    consumer = parsed["consumer"]
    champion = ["pinsage_champion", "pinsage://registry/champion"]
    assert parsed["announced"] == {"pinsage_daily": [champion], "pinsage_refresh": [champion]}
    assert consumer["timetable"] == "AssetTriggeredTimetable" and consumer["assets"] == [champion]
    assert consumer["max_active_runs"] == 1
    assert consumer["paused_upon_creation"] is None  # Airflow's setting decides: paused, like the others
    assert consumer["tasks"] == {"reload_recommender": {"retries": 2, "timeout": 120.0, "downstream": [],
                                                        "on_failure": ["FailureNotifier"]}}
    assert "PINSAGE_RECOMMENDER_URL" in consumer["doc_md"] and "pinsage" in consumer["tags"]


def test_the_forms_are_the_parameter_table(parsed):
    """Every field of the parsed DAG's form is a row of the table, with its default and bounds."""
    from pinsage.run.params import PARAMS

    rows = [p for p in PARAMS if "pinsage_daily" in p.form]
    params = parsed["params"]
    assert set(params) == {p.name for p in rows} | {"overrides"}
    for p in rows:
        assert params[p.name]["default"] == p.default, p.name
        schema = params[p.name]["schema"]
        assert params[p.name]["description"] == p.description, p.name
        for key, value in p.schema().items():
            if key != "description":  # Airflow keeps it beside the schema
                assert schema.get(key) == value, (p.name, key)


def _webhook_server(tmp_path):
    """A real https endpoint on 127.0.0.1 (a self-signed certificate, returned for the client to trust)
    that records the JSON bodies POSTed to it."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    cert, key = tmp_path / "hook.crt", tmp_path / "hook.key"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return received, server, cert


@pytest.mark.slow
def test_airflow_dags_test_runs_the_dag_on_sqlite(tmp_path):
    """The real DAG through Airflow's own runner, on a clean AIRFLOW_HOME with SQLite."""
    from mlflow import MlflowClient

    data = community_data(tmp_path / "data")
    home = tmp_path / "airflow"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = subprocess_env({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                          "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "MLFLOW_TRACKING_URI": uri,
                          "PINSAGE_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
                          "PINSAGE_RUNS_DIR": str(tmp_path / "runs")})
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    conf = json.dumps(small_params(data, model_name="pinsage-dags-test"))
    run = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "pinsage_daily", "-c", conf], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = c.get_model_version_by_alias("pinsage-dags-test", "champion")
    tags = c.get_run(mv.run_id).data.tags
    assert tags["airflow.dag_id"] == "pinsage_daily" and tags["airflow.run_id"].startswith("manual__")
    assert tags["airflow.logical_date"]
    # a bad dataset path fails prepare at once (no retries for errors a retry cannot fix), and the
    # failure notification reaches the configured webhook
    received, server, cert = _webhook_server(tmp_path)
    token = "T0KEN-in-the-path-8d1f"  # as in a Slack hook: the path is the secret
    hook = {"AIRFLOW_CONN_PINSAGE_FAILURE_WEBHOOK": f"https://127.0.0.1:{server.server_port}/hook/{token}",
            "SSL_CERT_FILE": str(cert)}  # the workers trust the hook's certificate
    try:
        bad = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", "pinsage_daily", "-c",
                              json.dumps({"data": str(tmp_path / "missing"), "model_name": "pinsage-dags-test"})],
                             env=dict(env, **hook),
                             cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "DatasetError" in out and "AirflowFailException" in out, out[-5000:]
    assert "new_state=failed" in out and "new_state=up_for_retry" not in out, out[-5000:]
    assert "pinsage: task prepare of pinsage_daily run manual__" in out, out[-5000:]
    assert len(received) == 1, received
    assert received[0]["task_id"] == "prepare" and received[0]["try_number"] == 1
    assert received[0]["error_type"] == "DatasetError" and received[0]["dag_id"] == "pinsage_daily"
    assert str(tmp_path / "missing") not in json.dumps(received[0])  # ids and the type only leave the machine
    assert f"failure notification sent to https://127.0.0.1:{server.server_port} (HTTP 204)" in out, out[-5000:]
    assert token not in out  # the log names the hook's scheme and host, never its path
    assert str(c.get_model_version_by_alias("pinsage-dags-test", "champion").version) == str(mv.version)
