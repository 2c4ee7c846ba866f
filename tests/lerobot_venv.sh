#!/usr/bin/env bash
# Builds .venv-lerobot/: LeRobot's own dataset loader (lerobot-dataset, module `ledataset`), its
# default video decoder (torchcodec, which loads the system's FFmpeg libraries: apt-get install
# ffmpeg) and the lerobot-doctor validator, beside a torch the project's global environment must
# not get (the project pins torch 2.13.0; lerobot-dataset imports beside 2.14.1).
# tests/test_lerobot_loader.py runs its checks with this venv's python and skips when it is absent.
# Re-running is cheap: an existing venv whose imports work is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RIG_LEROBOT_VENV:-.venv-lerobot}
PY=${PYTHON:-python3}
check='import ledataset, torch, torchvision, lerobot_doctor, pyarrow; from torchcodec.decoders import VideoDecoder'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" 2>/dev/null; then
  echo "lerobot venv: $VENV is ready"
  exit 0
fi
start=$(date +%s)
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# lerobot-dataset 0.4.4 names no torch; PyPI's 2.14.1 wheels (with their CUDA libraries, ~6 GB,
# run on the CPU too). torchvision 0.29 has no VideoReader, so the loader decodes with torchcodec.
"$VENV/bin/python" -m pip install -q \
  "torch==2.14.1" "torchvision==0.29.1" "torchcodec==0.17.0" "lerobot-dataset==0.4.4" "lerobot-doctor==0.2.0"
if ! "$VENV/bin/python" -c "$check"; then
  echo "lerobot venv: built, but torchcodec cannot load FFmpeg's libraries; apt-get install ffmpeg" >&2
  exit 1
fi
echo "lerobot venv: built $VENV in $(( $(date +%s) - start )) s"
