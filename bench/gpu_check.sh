#!/usr/bin/env bash
# GPU check, under 5 minutes on one GPU: the GPU tests, the paper-preset training step (fp32,
# AMP, AMP + channels-last, compiled) in ms/step and windows/s, the input pipeline feeding a real
# GPU step, and one short paper-preset fold (SED then DOA, a few hundred steps) on synthetic
# data. Writes one results file: ${OUT:-bench/gpu-results}/gpu_check.txt (+ .json).
#
#     bash bench/gpu_check.sh            # on the GPU machine, from the repository root
#
# Nothing here installs torch: run it in a venv whose torch has CUDA (scripts/setup-venv.sh
# keeps an existing CUDA torch).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${SELD_VENV:-.venv}"
OUT="${OUT:-bench/gpu-results}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.txt"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$LOG"; say "(exit ${PIPESTATUS[0]})"; }

say "== $(date -u +%FT%TZ) $(hostname)"
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$VENV/bin/python" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))"

say "== 1. GPU tests"
run timeout 300 "$VENV/bin/pytest" -q -m gpu tests/seld/test_gpu.py -p no:cacheprovider

say "== 2-3. training step and input pipeline"
run timeout 300 "$VENV/bin/python" bench/gpu_check.py --device cuda --steps 30 --json "$OUT/gpu_check.json"

say "== 4. one short paper-preset fold (SED then DOA, 200 steps each) on synthetic data"
WS="$(mktemp -d)"
run timeout 120 "$VENV/bin/seld-orch" synth --out "$WS/data" --per-split 2 --seconds 30 --formats mic
START=$(date +%s)
run timeout 600 "$VENV/bin/seld-orch" cv --dataset "$WS/data" --workspace "$WS/ws" --run gpu-fold \
    --config paper-mic --set train.steps=200 --set train.amp=true --folds 1 --gpu --json
say "fold wall time: $(( $(date +%s) - START )) s"
rm -rf "$WS"
say "== done: $LOG"
