#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no internet (nothing is downloaded): NVML inventory, a torch
# model of a few GB loaded and unloaded 100 times (NVML's used memory must come back within 64 MB), the
# tiny-weight Hunyuan3D-2 path through a real server on cuda:0, and the scheduler's accounting against NVML.
# Prints a table; exits 0 when every check passed; stops itself after 4 minutes.
#
#   scripts/gpu-check.sh                 # with .venv (torch must be a CUDA build: pip install torch==<pin>)
#   PYTHON=/path/to/python scripts/gpu-check.sh --cycles 100 --gb 4
#   scripts/gpu-check.sh --cpu           # no GPU: check the script itself on the CPU
#
# Needs the repository and a virtual environment with pocket3d, torch (CUDA), hy3dgen and nvidia-ml-py, as
# `make venv` installs them (swap in the CUDA torch wheel on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
if [ ! -x "$python" ]; then
    echo "no Python at $python: run 'make venv' (or set PYTHON)" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
exec timeout --kill-after=10 230 "$python" scripts/gpu_check.py "$@"
