"""Training killed with SIGKILL mid-epoch: the retried task resumes from the last checkpoint and ends
with the same model as an uninterrupted run with the same seed (CPU). Real processes, real signal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_community_dataset

from tasks import features, graph, neighbors, prepare

from .conftest import ROOT, small_params, subprocess_env

pytestmark = pytest.mark.slow


def _train_cmd(run_dir: str) -> list[str]:
    return [sys.executable, "-m", "tasks.train", "--run-dir", run_dir]


def _upstream(params: dict, run_key: str) -> dict:
    ref = prepare.run(params, run_key=run_key, dag_id="pinsage_daily", run_type="manual")
    features.run(ref)
    neighbors.run(ref, graph=graph.run(ref)["graph"])
    return ref


def test_sigkill_mid_epoch_then_retry_resumes_to_the_uninterrupted_result(store, tmp_path):
    # 600 contexts: epoch 2 has ~40 minibatches, and the kill follows its first progress line (10%)
    data = make_community_dataset(tmp_path / "data", n_items=60, n_contexts=600)
    params = small_params(data, epochs=2, model_name="kill-test", overrides={"train.num_workers": 1})
    killed, reference = _upstream(params, "manual__killed"), _upstream(params, "manual__reference")
    env = subprocess_env(store.env)
    ckpt = Path(killed["run_dir"]) / "train" / "last.pt"

    log_path = tmp_path / "killed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_train_cmd(killed["run_dir"]), env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        # The first progress line of epoch 2 comes after last.pt holds epoch 1 and while the rest of
        # epoch 2 is still to train: killing on it lands mid-epoch however fast the machine is.
        in_epoch_2 = re.compile(r"train epoch 2 \(at most 2\): +\d+%")
        while not in_epoch_2.search(log_path.read_text(errors="replace")):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "epoch 2 never started"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)  # the task process and its minibatch producer
        assert ckpt.exists()
    finally:
        if proc.poll() is None:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(ckpt, weights_only=True)
    assert int(state["epoch"]) == 1  # killed before epoch 2 ended: only epoch 1 is checkpointed
    assert not (Path(killed["run_dir"]) / "train" / "model.pt").exists()
    c = store.client()
    assert [m.step for m in c.get_metric_history(killed["mlflow_run_id"], "train_loss")] == [1]

    # the retry (Airflow runs the same command again) resumes after epoch 1
    retry = subprocess.run(_train_cmd(killed["run_dir"]), env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert "resumed from" in retry.stderr and "after epoch 1" in retry.stderr, retry.stderr[-3000:]
    uninterrupted = subprocess.run(_train_cmd(reference["run_dir"]), env=env, cwd=ROOT, capture_output=True,
                                   text=True, timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert "resumed" not in uninterrupted.stderr

    a = torch.load(Path(killed["run_dir"]) / "train" / "model.pt", weights_only=True)
    b = torch.load(Path(reference["run_dir"]) / "train" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    ha = json.loads((Path(killed["run_dir"]) / "train" / "history.json").read_text())
    hb = json.loads((Path(reference["run_dir"]) / "train" / "history.json").read_text())
    assert [e["epoch"] for e in ha["epochs"]] == [1, 2]
    assert [e["loss"] for e in ha["epochs"]] == pytest.approx([e["loss"] for e in hb["epochs"]], abs=1e-6)
    assert ha["best_epoch"] == hb["best_epoch"]
    assert ha["best_validation_mrr"] == pytest.approx(hb["best_validation_mrr"], abs=1e-6)
    # MLflow: every epoch once, the same values as the uninterrupted run
    for key in ("train_loss", "epoch_validation_mrr"):
        got = {m.step: m.value for m in c.get_metric_history(killed["mlflow_run_id"], key)}
        want = {m.step: m.value for m in c.get_metric_history(reference["mlflow_run_id"], key)}
        assert len(c.get_metric_history(killed["mlflow_run_id"], key)) == 2, key
        assert got == pytest.approx(want, abs=1e-6), key
