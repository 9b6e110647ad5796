"""The cluster's autoscaling path under test: Ray's real autoscaler (v2) on this machine, with the
worker node types of the shipped ``cluster.yaml`` (fake multi-node provider), token auth on and
an MLflow server on the head, as ``ray up`` starts them.

From outside, as a user would: a GPU sweep submitted with ``seld-orch submit sweep --gpu``
launches GPU workers from zero, its fold jobs run on them and it is tracked in the head's MLflow;
a GPU worker terminated in the middle of a stage is replaced and the stage resumes from its last
epoch, with the same scores as the uninterrupted run; the idle workers are removed; nothing is
left running. The tests share one cluster and run in order (about 4-5 minutes in all; behind the
``heavy`` marker: ``bash scripts/test.sh -m heavy``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cluster import FAKE_HEAD_NODE_ID
from seld.methods.training import load_checkpoint

from clusters import BIN, SimulatedCluster, client_env

# heavy: about 4-5 min, and the GPU sweep's second cell failed in 2 of 8 runs here with "partially
# initialized module 'torch' has no attribute 'library'" (not yet explained; see the issue note)
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
#: one fold, 4 short epochs per stage (batches of 2 make each epoch long enough to be
#: interrupted), the same in the sweep's cells and the interrupted cv
EPOCHS = 4
SETS = {"cv.folds": [1], "train.epochs": EPOCHS, "train.batch_size": 2}


@pytest.fixture(scope="module")
def cluster():
    cluster = SimulatedCluster(CLUSTER_YAML, idle_timeout_minutes=0.2)
    try:
        yield cluster
    finally:
        cluster.stop()
        assert cluster.our_processes() == []


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_data: Path) -> dict[str, Path]:
    """The shared storage of the cluster: the dataset and one workspace."""
    root = tmp_path_factory.mktemp("shared")
    return {"data": tiny_data, "workspace": root / "workspace", "root": root}


def seld_orch(cluster: SimulatedCluster, *args: str, timeout: float = 120):
    return subprocess.run(
        [str(BIN / "seld-orch"), *args],
        env=client_env(cluster.token),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def submit(cluster: SimulatedCluster, command: str, *args: str) -> str:
    done = seld_orch(cluster, "submit", command, "--address", cluster.dashboard, *args)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()
    assert re.fullmatch(r"raysubmit_\w+", job), done.stdout
    return job


def wait_job(cluster: SimulatedCluster, job: str, timeout: float = 900) -> dict:
    status = seld_orch(
        cluster, "status", job, "--address", cluster.dashboard, "--wait", "--json", timeout=timeout
    )
    info = json.loads(status.stdout)
    if info["status"] != "SUCCEEDED":
        logs = seld_orch(cluster, "logs", job, "--address", cluster.dashboard).stdout
        pytest.fail(f"job {job}: {info['status']}\n{logs[-4000:]}")
    return info


def stage_nodes(run_dir: Path) -> dict[str, str]:
    return {
        str(p.parent.relative_to(run_dir)): p.read_text()
        for p in sorted(run_dir.glob("**/fold*/*/node.txt"))
    }


def test_a_gpu_sweep_launches_gpu_workers_from_zero(cluster: SimulatedCluster, shared):
    assert cluster.live_nodes("gpu_worker") == 0  # min_workers 0: nothing runs until asked
    spec = shared["root"] / "gpu-sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "gpu", "base": "tiny", "set": SETS, "seeds": [0, 1],
             "variants": [{"name": "crnn"}]}
        )
    )  # fmt: skip
    job = submit(
        cluster, "sweep", str(spec), "--dataset", str(shared["data"]),
        "--workspace", str(shared["workspace"]), "--gpu",
    )  # fmt: skip
    wait_job(cluster, job)

    log = cluster.autoscaler_log()
    launched = re.findall(r"Launched (\d+) nodes of type gpu_worker", log)
    assert sum(map(int, launched)) >= 2, log[-3000:]  # one per cell in flight, from zero
    nodes = stage_nodes(shared["workspace"] / "runs" / "gpu")
    assert sorted(nodes) == [f"crnn-seed{s}/fold1/{st}" for s in (0, 1) for st in ("doa", "sed")]
    gpu_nodes = set(re.findall(r"cloud_instance_id=(f{51}\d{5}), ray_id=\1\): ray node", log))
    assert FAKE_HEAD_NODE_ID not in nodes.values()  # nothing trained on the head
    assert set(nodes.values()) <= gpu_nodes | set(re.findall(r"f{51}0000[1-9]", log))
    assert len(set(nodes.values())) >= 2  # the two cells trained on two GPU workers at once
    shared["sweep_nodes"] = nodes

    # tracked in the head's MLflow server (MLFLOW_TRACKING_URI of the head's `ray start`)
    client = MlflowClient(cluster.mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    sweep = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(sweep) == 1 and sweep[0].info.status == "FINISHED"
    cells = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep[0].info.run_id]
    assert sorted(r.data.tags["seed"] for r in cells) == ["0", "1"]
    assert all(r.info.status == "FINISHED" and "cv_seld" in r.data.metrics for r in cells)

    # the user's view of the job; without the cluster's token, a one-line refusal
    anonymous = subprocess.run(
        [str(BIN / "seld-orch"), "status", "--address", cluster.dashboard],
        env=client_env("") | {"HOME": str(shared["root"])},  # no token, no ~/.ray/auth_token
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert anonymous.returncode == 2, anonymous.stdout
    assert f"the Ray cluster at {cluster.dashboard} refused this client" in anonymous.stderr
    listing = seld_orch(cluster, "status", "--address", cluster.dashboard, "--json")
    assert job in [row["job_id"] for row in json.loads(listing.stdout)]
    logs = seld_orch(cluster, "logs", job, "--address", cluster.dashboard)
    assert logs.returncode == 0 and "sweep gpu" in logs.stdout and "crnn-seed1" in logs.stdout
    followed = seld_orch(cluster, "logs", job, "--address", cluster.dashboard, "--follow")
    assert followed.returncode == 0 and "sweep gpu" in followed.stdout  # ends with the job
    print(f"\nfold jobs' nodes: {json.dumps(nodes, indent=1)}")
    print("\n".join(line for line in log.splitlines() if "gpu_worker" in line and "aunch" in line))


def test_a_lost_gpu_worker_is_replaced_and_the_stage_resumes(cluster: SimulatedCluster, shared):
    """The uninterrupted reference is the sweep's seed-0 cell: the same config and seed."""
    if "sweep_nodes" not in shared:
        pytest.skip("needs the sweep of the test before")
    ws = shared["workspace"]
    run_dir = ws / "runs" / "lost"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in SETS.items()]
    job = submit(
        cluster, "cv", "--dataset", str(shared["data"]), "--workspace", str(ws), "--gpu",
        "--config", "tiny", *sets, "--seed", "0", "--run", "lost",
    )  # fmt: skip
    sed = run_dir / "fold1" / "sed"
    deadline = time.monotonic() + 600
    while True:  # until the SED stage has checkpointed two epochs, and has more to go
        epoch = 0
        if (sed / "last.pt").exists():
            try:
                epoch = int(load_checkpoint(sed / "last.pt")["epoch"])
            except Exception:  # being replaced this instant: read it again
                epoch = 0
        if 2 <= epoch < EPOCHS:
            break
        assert epoch < EPOCHS, "the stage finished before it could be interrupted"
        assert time.monotonic() < deadline, "the SED stage never checkpointed an epoch"
        time.sleep(0.05)
    victim = (sed / "node.txt").read_text()
    killed_at = time.time()
    killed = cluster.kill_node(victim)
    print(f"\nkilled node {victim} ({len(killed)} processes) after epoch {epoch} of {EPOCHS}")
    seen: list[int] = []  # the epochs of the stage's checkpoint from now on, as they change
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        while watching.is_set():
            try:
                current = int(load_checkpoint(sed / "last.pt")["epoch"])
            except Exception:  # being replaced this instant
                current = None
            if current is not None and (not seen or seen[-1] != current):
                seen.append(current)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        wait_job(cluster, job)
    finally:
        watching.clear()
        watcher.join()
    # resumed from its last epoch: the checkpoint never went back to an earlier epoch
    assert seen[0] >= epoch and seen == sorted(seen) and seen[-1] == EPOCHS, seen

    nodes = stage_nodes(run_dir)
    assert nodes["fold1/sed"] != victim  # the stage finished on another node
    log = cluster.autoscaler_log()
    replacement = nodes["fold1/sed"]
    assert replacement in log  # launched by the autoscaler after the loss
    history = load_checkpoint(sed / "last.pt")["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    worker = json.loads((sed / "worker.json").read_text())
    assert worker["started"] > killed_at  # the stage's worker was started again after the loss
    print(
        f"stage resumed on node {replacement} {worker['started'] - killed_at:.1f} s after the "
        f"loss; checkpointed epochs from the loss on: {seen}"
    )

    # no MLflow run is left RUNNING
    client = MlflowClient(cluster.mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []

    # the same scores as the uninterrupted run of the same seed
    lost = json.loads((run_dir / "metrics.json").read_text())
    reference = json.loads((ws / "runs" / "gpu" / "crnn-seed0" / "metrics.json").read_text())
    print(f"interrupted: {lost['overall']}\nuninterrupted: {reference['overall']}")
    for key, value in reference["overall"].items():
        assert lost["overall"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_idle_gpu_workers_are_removed(cluster: SimulatedCluster):
    deadline = time.monotonic() + 120  # idle timeout 12 s, one-second ticks
    while cluster.live_nodes("gpu_worker") and time.monotonic() < deadline:
        time.sleep(2)
    status = cluster.status()
    assert cluster.live_nodes("gpu_worker") == 0, status
    log = cluster.autoscaler_log()
    assert re.search(r"Removing \d+ nodes of type gpu_worker \(idle\)", log), log[-3000:]
    print(status)
    print("\n".join(line for line in log.splitlines() if "gpu_worker (idle)" in line))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
