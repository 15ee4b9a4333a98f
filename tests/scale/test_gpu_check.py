"""The prepared GPU check's smoke run (issue 32): ``bench/gpu_check.sh --cpu-smoke`` runs every step's
code path at tiny sizes on the CPU, so the GPU run cannot fail for a typo, an import or a device
mismatch. Its figures are smoke-test figures, not performance figures: only their signs are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY_SKIPS = {"pytest_cuda"}  # the one step that cannot run without a GPU (NCCL: DDP runs gloo here)


def test_gpu_check_cpu_smoke_runs_every_step(tmp_path):
    out = tmp_path / "smoke.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "PINSAGE_"))}
    env["PYTHON"] = sys.executable
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and "not performance figures" in report["note"]
    assert report["machine"]["torch"] and "device_count" in report["machine"]
    steps = report["steps"]
    assert list(steps) == ["pytest_cuda", "train", "vgg", "export", "ddp"]
    for name, step in steps.items():
        allowed = {"ok", "skipped"} if name in CPU_ONLY_SKIPS else {"ok"}
        assert step["status"] in allowed, (name, step.get("error"), step.get("output_tail", "")[-3000:])
        assert step["command"] and step["seconds"] >= 0
        if step["status"] == "skipped":
            assert step["reason"]

    train = steps["train"]["figures"]
    for precision in ("bf16", "fp32"):
        assert train[precision]["examples_per_s_serial"] > 0
        parts = train[precision]["breakdown_s"]
        assert set(parts) == {"producer_s", "host_to_device_s", "forward_backward_s", "id_embedding_table_s",
                              "adam_s"}
        assert all(v > 0 for v in parts.values()), parts
    assert train["end_to_end"]["examples_per_s_long_run"] > 0
    assert steps["vgg"]["figures"]["fp32_images_per_s"] > 0 and steps["vgg"]["figures"]["bf16_images_per_s"] > 0
    assert steps["export"]["figures"]["items_per_s"] > 0
    assert steps["ddp"]["figures"]["backend"] == "gloo" and steps["ddp"]["figures"]["world_size"] == 2
    # every figure is printed with the command that reproduces it, and none is called a GPU figure
    assert report["figures"] and all(f["command"].startswith("bash bench/gpu_check.sh --cpu-smoke")
                                     for f in report["figures"])
    assert "FIGURE " not in done.stdout and "SMOKE (not a performance figure) train.bf16" in done.stdout
