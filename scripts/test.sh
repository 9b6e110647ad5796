#!/usr/bin/env bash
# Set up the venv, lint, and run the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
VENV="${SELD_VENV:-.venv}"
echo "==> versions"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
names = ["torch", "ray", "optuna", "mlflow", "numpy", "scipy", "librosa", "h5py", "soundfile",
         "soxr", "pyroomacoustics", "typer", "rich", "pydantic", "threadpoolctl", "psutil", "sed_eval",
         "pytest", "ruff", "import-linter", "mkdocs", "mkdocs-material", "mkdocstrings",
         "mkdocstrings-python"]
print("  ".join(f"{n}=={md.version(n)}" for n in names))
PY
echo "==> ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "==> import-linter (layers: pyproject.toml [tool.importlinter])"
"$VENV/bin/lint-imports" --no-cache
echo "==> pytest"
# the heavy tests (about 12 min: multi-node spread, data-parallel folds, a submitted cv on a
# 2-node cluster, the autoscaling cluster) run with `bash scripts/test.sh -m heavy`; a later -m wins.
# The rayup test (`ray up` over ssh on this machine, as root) runs with `.venv/bin/pytest -m rayup`,
# the Slurm tests (a one-node Slurm from Debian's packages, as root) with `.venv/bin/pytest -m slurm`
exec "$VENV/bin/pytest" -m "not heavy and not rayup and not slurm" "$@"
