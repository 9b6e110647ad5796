#!/usr/bin/env bash
# Set up the venv and run the main job: `seld-orch demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec "${SELD_VENV:-.venv}/bin/seld-orch" demo "$@"
