"""The recommender service: related items over HTTP from a registered model, following its alias.

    python -m tasks.serve --model models:/pinsage@champion [--host 127.0.0.1] [--port 8000] [--poll-seconds 30]

Serves ``pinsage.serve.http`` (``GET /related/{item_id}?k=``, ``POST /related``, ``/health``,
``POST /reload``) from the version the alias names. A loader thread resolves the alias every
``--poll-seconds`` (and at once on ``POST /reload``: ``dags/pinsage_serving.py`` sends one when the
``pinsage_champion`` asset is updated); when it names another version it downloads that version's
index (with its answer table), embeddings and titles, loads them, and swaps them in whole. Until the
new version is loaded the old one answers; a version that fails to download or load is not served,
the old one stays, and ``/health`` says why (``last_error``); the next check tries again.
``models:/NAME/VERSION`` serves that version and never reloads.

It needs MLflow's client and the answer path only (no torch, no pandas of its own, no Airflow):
``docker/recommender.Dockerfile`` installs ``requirements-serve.txt``. The registry is reached as
every MLflow client does: ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``), and
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` for a server with basic auth.
"""

from __future__ import annotations

import argparse
import gc
import logging
import re
import shutil
import tempfile
import threading
from pathlib import Path

import mlflow

from pinsage.serve.http import Loaded, Serving, create_app, now_iso, run_server
from pinsage.serve.recommend import Catalogue

log = logging.getLogger("pinsage.serve")
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/VERSION`` -> (NAME, None, VERSION)."""
    m = MODEL_URI.match(uri.strip())
    if not m:
        raise ValueError(f"--model must be models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
    return m["name"], m["alias"], m["version"]


def load_version(client, name: str, version: str, cache: Path) -> Catalogue:
    """A registered version's catalogue: its index (and answer table), embeddings and titles."""

    root = f"models:/{name}/{version}/artifacts"
    listed = {Path(f.path).name: f for f in mlflow.artifacts.list_artifacts(artifact_uri=root)}
    missing = [a for a in ("index", "embeddings") if a not in listed or not listed[a].is_dir]
    items = next((n for n, f in listed.items() if not f.is_dir and n.endswith(".parquet")), None)
    if missing or items is None:
        raise ValueError(f"{root} lacks {missing or ['the items table']}: not a PinSage recommender")
    dst = Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=cache))
    try:
        local = {what: mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{what}", dst_path=str(dst / what))
                 for what in ("index", "embeddings", items)}
        return Catalogue.from_dirs(local["index"], local["embeddings"], local[items])  # read into memory
    finally:
        shutil.rmtree(dst, ignore_errors=True)


class Follower:
    """Keeps ``serving`` on the version ``models:/NAME@ALIAS`` names (see the module docstring)."""

    def __init__(self, model_uri: str, serving: Serving, poll_seconds: float = 30.0,
                 tracking_uri: str | None = None):

        self.name, self.alias, self.version = parse_model_uri(model_uri)
        self.serving, self.poll_seconds = serving, poll_seconds
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
        self.cache = Path(tempfile.mkdtemp(prefix="pinsage-serve-"))
        self.wake = threading.Event()
        self.checking = threading.Lock()  # one check at a time (the poll and a /reload)
        serving.on_reload = self.wake.set

    def target_version(self) -> str:
        if self.version is not None:
            return self.version
        return str(self.client.get_model_version_by_alias(self.name, self.alias).version)

    def check(self) -> bool:
        """Resolve the alias; load and swap in its version when it is not the one served. True when
        the served version changed."""
        with self.checking:
            self.serving.last_check = now_iso()
            try:
                version = self.target_version()
                cur = self.serving.current
                if cur is not None and cur.version == version:
                    self.serving.last_error = None
                    return False
                log.info("loading %s version %s", self.name, version)
                catalogue = load_version(self.client, self.name, version, self.cache)
            except Exception as err:  # the registry down, a version without artifacts: keep serving
                self.serving.last_error = f"{type(err).__name__}: {err}"[:500]
                log.warning("check of models:/%s@%s failed, still serving %s: %s", self.name, self.alias,
                            self.serving.current.version if self.serving.current else "nothing", err)
                return False
            self.serving.swap(Loaded(catalogue, model=self.name, version=version, alias=self.alias,
                                     source=f"models:/{self.name}/{version}"))
            # what is loaded now lives until the next swap: keep it out of the collector's full passes
            # (~300k objects after MLflow's client: a 150-230 ms pause on the event loop otherwise)
            gc.collect()
            gc.freeze()
            return True

    def run_forever(self) -> None:
        while True:
            self.check()
            if self.version is not None and self.serving.current is not None:
                return  # a fixed version: nothing to follow
            self.wake.wait(self.poll_seconds)
            self.wake.clear()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="pinsage-follower", daemon=True)
        thread.start()
        return thread


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.serve", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, metavar="URI",
                   help="models:/NAME@ALIAS (followed) or models:/NAME/VERSION")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (all interfaces only inside a container whose port is published "
                        "on 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--poll-seconds", type=float, default=30.0, help="how often the alias is resolved")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    args = p.parse_args(argv)
    if args.poll_seconds <= 0:
        p.error(f"--poll-seconds must be > 0, got {args.poll_seconds}")
    try:
        parse_model_uri(args.model)
    except ValueError as err:
        p.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serving = Serving()
    Follower(args.model, serving, args.poll_seconds, args.tracking_uri).start()
    run_server(create_app(serving), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
