"""The shipped ``cluster.yaml`` through a real ``ray up`` on this machine (local provider, ssh as
the node user): ``scripts/cluster-up-check.sh``. Needs root; left out of the default run
(``.venv/bin/pytest -m rayup`` runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster-up-check.sh"

#: every check the script reports, each of which must PASS
CHECKS = (
    "packages",
    "sshd",
    "node-user",
    "shared-mount",
    "node-venv-torch",
    "token-file",
    "derived-config",
    "ray-up",
    "token-auth-refused",
    "token-auth-accepted",
    "ray-exec-token",
    "node-ray-version",
    "mlflow-health-forward",
    "mlflow-health-exec",
    "gpu-worker-joined",
    "job-succeeded",
    "fold-jobs-on-gpu-node",
    "mlflow-run-tracked",
    "ray-up-rerun",
    "mlflow-restarted",
    "ray-down",
    "nothing-left",
)


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "ray up over ssh on this machine needs Linux"
    if os.geteuid() != 0:
        return "needs root (installs sshd, adds the cluster's ssh user, mounts /mnt/seld)"
    if shutil.which("apt-get") is None:
        return "needs apt-get (Debian or Ubuntu) for openssh-server, rsync, sudo, nfs-common"
    return None


@pytest.mark.rayup
@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_ray_up_of_the_shipped_cluster_yaml():
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,  # the first run pip-installs the project for the node user
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output[output.index("cluster-up-check summary") :]
    print(summary)  # shown with `pytest -m rayup -s` (or -rP)
    for check in CHECKS:
        assert f"PASS  {check}  " in summary, f"{check} did not pass:\n{summary}"
    assert "FAIL  " not in summary, summary
    assert "RESULT: PASS" in summary
