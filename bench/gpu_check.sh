#!/usr/bin/env bash
# GPU check, about 6 minutes on one GPU (under 8): the GPU tests, then bench/gpu_check.py:
#   the paper-preset training step (fp32, AMP, AMP + channels-last, compiled) in ms and windows/s;
#   the memory-mapped window source feeding that step against the step alone;
#   1, 2 and 4 processes sharing the GPU (each held to its share of the memory, as
#     `cv --gpus-per-job` holds fold jobs): total windows/s and peak memory;
#   the card's bf16 matrix rate and the step's achieved TFLOP/s as a fraction of it;
#   one short paper-mic fold (SED then DOA, 2000 steps each) on synthetic data.
# Writes one results file: ${OUT:-bench/gpu-results}/gpu_check.txt (+ gpu_check.json).
#
#     bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#
# Nothing here installs torch: run it with a Python whose torch has CUDA (PYTHON=python3, or
# the venv of scripts/setup-venv.sh, which keeps an existing CUDA torch). Ray and MLflow are not
# needed: the fold runs through the library, as a fold job does inside `seld-orch cv`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-${SELD_VENV:-.venv}/bin/python}"
OUT="${OUT:-bench/gpu-results}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$LOG"; say "(exit ${PIPESTATUS[0]})"; }

say "== $(date -u +%FT%TZ) $(hostname)"
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0))"

say "== 1. GPU tests"
run timeout 120 "$PY" -m pytest -q -m gpu tests/seld/test_gpu.py -p no:cacheprovider

say "== 2-5. step, input pipeline, shared GPU, card rate, short fold"
START=$(date +%s)
run timeout 400 "$PY" bench/gpu_check.py --device cuda --steps 30 --json "$OUT/gpu_check.json"
say "gpu_check.py wall time: $(( $(date +%s) - START )) s"
say "== done: $LOG"
