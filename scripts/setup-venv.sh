#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the project into it.
#
# Torch is installed first and only if the venv has none, so an existing torch (a CUDA build on a
# GPU machine) is kept. SELD_TORCH_SPEC picks the torch to install (default: the CPU build these
# machines carry on local disk; e.g. SELD_TORCH_SPEC='torch' for the registry's default build).
# SELD_VENV picks another venv folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SELD_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "==> installing ${SELD_TORCH_SPEC:-torch==2.13.0}"
    "$VENV/bin/python" -m pip install --quiet "${SELD_TORCH_SPEC:-torch==2.13.0}" 2>&1 \
        | grep -v "is ignored: it is neither a file nor a directory" || true
    "$VENV/bin/python" -c "import torch" 2>/dev/null \
        || { echo "error: torch did not install" >&2; exit 1; }
fi
# The Ray that cluster.yaml installs on a cluster's nodes: `ray up` and `seld-orch submit` from
# this venv then talk to the same Ray version (cluster-check and submit compare them).
# The extras: test (pytest, ruff, import-linter, sed_eval) and docs (mkdocs, built by a test).
RAY_PIN="$(grep -o "ray\[default,tune,train\]==[0-9][0-9.]*" cluster.yaml | head -n 1)"
echo "==> installing seld-orchestrator and its dependencies (${RAY_PIN:-ray unpinned})"
"$VENV/bin/python" -m pip install --quiet ${RAY_PIN:+"$RAY_PIN"} --editable '.[test,docs]' 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
"$VENV/bin/python" -m pip check >/dev/null || "$VENV/bin/python" -m pip check
