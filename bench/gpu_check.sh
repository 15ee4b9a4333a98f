#!/usr/bin/env bash
# The prepared GPU check (issue 32): every figure the project still lacks from a GPU, in one run of
# at most ~8 minutes on one NVIDIA GPU, written to one JSON file. The logic is bench/gpu_check.py.
#
#   bash bench/gpu_check.sh [--cpu-smoke] [--out FILE.json] [--only STEP ...] [--budget-s S]
#
# --cpu-smoke runs the same code paths at tiny sizes on the CPU (< 1 minute): its figures are
# smoke-test figures, not performance figures. `python3 bench/gpu_check.py --help` lists every option.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GPU_CHECK_WRAPPER=1  # the figures' commands then read `bash bench/gpu_check.sh ...`
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3 >/dev/null 2>&1; then PY=python3; else PY=python; fi
fi
exec "$PY" "$ROOT/bench/gpu_check.py" "$@"
