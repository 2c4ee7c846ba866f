#!/usr/bin/env bash
# Builds .venv-lerobot/: LeRobot's own dataset loader (lerobot-dataset, module `ledataset`) and
# the lerobot-doctor validator, beside a torch the project's global environment must not get.
# tests/test_lerobot_loader.py runs its checks with this venv's python and skips when it is absent.
# Re-running is cheap: an existing venv whose imports work is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RIG_LEROBOT_VENV:-.venv-lerobot}
PY=${PYTHON:-python3}
check='import ledataset, torch, torchvision, lerobot_doctor, pyarrow'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" 2>/dev/null; then
  echo "lerobot venv: $VENV is ready"
  exit 0
fi
start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch/torchvision: the CPU wheels pip finds first; lerobot-dataset 0.4.4 does not name them.
"$VENV/bin/python" -m pip install -q \
  "torch==2.14.1" "torchvision==0.29.1" "lerobot-dataset==0.4.4" "lerobot-doctor==0.2.0"
"$VENV/bin/python" -c "$check"
echo "lerobot venv: built $VENV in $(( $(date +%s) - start )) s"
