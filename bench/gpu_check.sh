#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): training images/s and peak memory per precision /
# variant, the multiview check, a 1-process NCCL torchrun run, a short evaluate_depth.py run and the
# loader with and without the image cache, recorded to bench/results/gpu_check_<gpu>.json in under
# 8 minutes. Without CUDA: one line, exit status 0. Flags: bench/gpu_check.sh --help.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" bench/gpu_check.py "$@"
