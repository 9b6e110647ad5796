"""Cross-validation and sweeps on a Slurm allocation (``seld-orch slurm``).

The first tests check the batch script and the errors without Slurm. The ``slurm`` tests run
against a real one-node Slurm on this machine: they install ``slurmctld``, ``slurmd`` and
``munge`` from Debian's packages where they are missing, configure a CPU-only node in a
temporary folder, and start the three daemons themselves (no systemd), stopping them again by
their PIDs. They need root; ``.venv/bin/pytest -m slurm -s`` runs them (about 6 min here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.slurm import Allocation, SlurmError, SlurmOptions, batch_script

runner = CliRunner()
VENV_BIN = Path(sys.executable).parent


def test_the_batch_script_asks_slurm_for_the_options_and_runs_the_launcher(tmp_path: Path):
    ws = tmp_path / "ws"
    result = runner.invoke(
        app,
        [
            "slurm", "submit", "--nodes", "2", "--gpus-per-node", "4", "--time", "1-12:00:00",
            "--partition", "gpu", "--account", "lab", "--sbatch", "--qos=long", "--dry-run",
            "--interface", "ib0",
            "--", "cv", "--dataset", "data", "--workspace", str(ws), "--run", "a b",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scripts = list((ws / "slurm").glob("seld-cv-*.sbatch"))
    assert len(scripts) == 1 and os.access(scripts[0], os.X_OK)
    text = scripts[0].read_text()
    assert text in result.stdout
    directives = re.findall(r"^#SBATCH (\S+)$", text, flags=re.M)
    assert directives == [
        "--job-name=seld",
        "--nodes=2",
        "--ntasks-per-node=1",
        f"--cpus-per-task={SlurmOptions.cpus_per_node}",
        "--time=1-12:00:00",
        f"--signal=B:USR1@{SlurmOptions.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={(ws / 'slurm').resolve()}/%x-%j.out",
        f"--chdir={Path.cwd()}",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--account=lab",
        "--qos=long",
    ]
    # the launcher is exec'd, so that Slurm's USR1 reaches it; arguments keep their quoting
    last = text.strip().splitlines()[-1]
    assert last.startswith(
        f"exec {sys.executable} -m orchestrator.cli slurm run --interface=ib0 -- cv "
    )
    assert last.endswith("--run 'a b'")
    # a CPU job asks for no GPUs, and no partition or account unless given
    cpu = batch_script(SlurmOptions(), ["sweep", "x"], tmp_path, tmp_path)
    assert "gpus" not in cpu and "--partition" not in cpu and "--account" not in cpu


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "4h", "--", "cv"], "--time '4h' is not Slurm's"),
        (["--nodes", "0", "--", "cv"], "--nodes must be at least 1"),
        (["--signal-lead", "10", "--", "cv"], "Slurm checks its signals once a minute"),
        (["--", "train", "--fold", "1"], "runs one of cv, sweep, tune, not ['train']"),
    ],
)
def test_a_job_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, args, message):
    result = runner.invoke(app, ["slurm", "submit", "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_launcher_outside_an_allocation_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    result = runner.invoke(app, ["slurm", "run", "--", "cv", "--dataset", "d"])
    assert result.exit_code == 2
    assert "not inside a Slurm allocation" in result.output


def test_the_allocation_is_read_from_slurms_environment():
    env = {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "gpu7",
        "SLURM_CPUS_PER_TASK": "16",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_RESTART_COUNT": "2",
    }
    assert Allocation.from_env(env) == Allocation("42", ("gpu7",), 16, 2, 2)
    # without CUDA_VISIBLE_DEVICES, Slurm's count; without either, a CPU node
    env.pop("CUDA_VISIBLE_DEVICES")
    assert Allocation.from_env(env).gpus == 4
    env.pop("SLURM_GPUS_ON_NODE")
    assert Allocation.from_env(env).gpus == 0
    with pytest.raises(SlurmError, match="SLURM_JOB_NODELIST is empty"):
        Allocation.from_env({"SLURM_JOB_ID": "1"})


# --- a real one-node Slurm ----------------------------------------------------------------

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def _slurm_skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "a one-node Slurm needs Linux"
    if os.geteuid() != 0:
        return "needs root (installs and runs slurmctld, slurmd and munged)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "needs Slurm installed, or apt-get to install it"
    return None


def _install() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        check=True,
        env=env,
        capture_output=True,
    )


def _conf(root: Path, cpus: int) -> str:
    host = socket.gethostname()
    return f"""ClusterName=seldcheck
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.sock
CredType=cred/munge
CommunicationParameters=NoInAddrAny
SlurmctldPort=16917
SlurmdPort=16918
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
KillWait=30
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Slurm:
    """A one-node Slurm whose daemons this test started."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {
            **os.environ,
            "SLURM_CONF": str(root / "slurm.conf"),
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        }
        self.daemons: list[subprocess.Popen] = []
        self.jobs: list[str] = []

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done.stdout

    def job(self, job: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty once Slurm has forgotten the job)."""
        out = self.run("scontrol", "show", "job", job, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job: str, states: tuple[str, ...], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job)
            if info.get("JobState") in states:
                return info
            time.sleep(2)
        raise AssertionError(f"job {job} not {states} in {timeout} s: {self.job(job)}")

    def log(self, workspace: Path, job: str) -> str:
        return (workspace / "slurm" / f"seld-{job}.out").read_text()


def _leftovers(slurm: Slurm) -> list[str]:
    """Processes of the check still alive: Ray of its jobs, its launchers, its daemons."""
    marks = [f"seld-ray-{j}" for j in slurm.jobs] + [str(slurm.root)]
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if any(m in line for m in marks) or "orchestrator.cli slurm" in line:
            found.append(f"{p.info['pid']} {line[:120]}")
    return found


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    _install()
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (root / "slurm.conf").write_text(_conf(root, os.cpu_count() or 2))
    cluster = Slurm(root)
    log = (root / "log" / "daemons.out").open("w")
    munge = [
        "munged", "--foreground", "--force", f"--socket={root}/munge/munge.sock",
        f"--key-file={key}", f"--log-file={root}/log/munged.log",
        f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/seed",
    ]  # fmt: skip
    conf = str(root / "slurm.conf")
    for command in (munge, ["slurmctld", "-D", "-i", "-f", conf], ["slurmd", "-D", "-f", conf]):
        cluster.daemons.append(
            subprocess.Popen(command, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
        )
        time.sleep(1)
    deadline = time.monotonic() + 60
    while "idle" not in cluster.run("sinfo", "-h", "-o", "%T", check=False):
        assert time.monotonic() < deadline, (root / "log" / "slurmctld.log").read_text()[-2000:]
        time.sleep(1)
    try:
        yield cluster
    finally:
        for job in cluster.jobs:
            cluster.run("scancel", job, check=False)
        time.sleep(2)
        for daemon in reversed(cluster.daemons):
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()
        left = _leftovers(cluster)
        print("\nleft running after the check:", left or "nothing")
        assert not left, left


def _submit(slurm: Slurm, workspace: Path, *args: str) -> tuple[str, Path]:
    out = slurm.run(
        "seld-orch", "slurm", "submit", "--cpus-per-node", str(os.cpu_count() or 2),
        "--time", "00:30:00", "--signal-lead", "120", "--", *args,
    )  # fmt: skip
    job = out.strip().splitlines()[-1]
    slurm.jobs.append(job)
    script = max((workspace / "slurm").glob("*.sbatch"), key=lambda p: p.stat().st_mtime)
    print(f"$ sbatch {script.name}\n{job}")
    return job, script


def _squeue(slurm: Slurm) -> None:
    print(slurm.run("squeue", "-o", "%.6i %.9P %.8j %.8u %.2t %.10M %.6D %R"), end="")


def _completed(slurm: Slurm, job: str) -> str:
    """The job's completion record (Slurm's jobcomp log), which must say COMPLETED, exit 0."""
    lines = (slurm.root / "log" / "jobcomp.txt").read_text().splitlines()
    line = [x for x in lines if x.startswith(f"JobId={job} ")][-1]
    assert "JobState=COMPLETED" in line and "ExitCode=0:0" in line, line
    return line


@pytest.mark.slurm
def test_a_sweep_runs_across_the_allocation_and_its_runs_are_in_mlflow(slurm, tiny_data, tmp_path):
    from orchestrator.tracking import tracking_client

    ws = tmp_path / "ws"
    sweep = tmp_path / "methods.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "slurm-check",
                "base": "tiny",
                "set": {"train.epochs": 1},
                "seeds": [0],
                "variants": [{"name": "two-stage"}, {"name": "joint", "set": {"method": "joint"}}],
            }
        )
    )
    job, _ = _submit(slurm, ws, "sweep", str(sweep), "--dataset", str(tiny_data),
                     "--workspace", str(ws))  # fmt: skip
    slurm.wait(job, ("RUNNING",), 60)
    _squeue(slurm)
    info = slurm.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 900)
    log = slurm.log(ws, job)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    print(_completed(slurm, job))
    assert "Ray on 127.0.0.1 only, token authentication on" in log
    comparison = (ws / "runs" / "slurm-check" / "comparison.md").read_text()
    print(comparison)
    client = tracking_client(f"sqlite:///{ws / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.mlflow.runName LIKE '%-seed0'",
    )
    assert {r.info.run_name for r in runs} == {
        "slurm-check/two-stage-seed0",
        "slurm-check/joint-seed0",
    }
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all(0 < r.data.metrics["cv_seld"] for r in runs), [r.data.metrics for r in runs]


def _history(client, workspace: Path, run: str) -> dict[str, list[tuple[int, int]]]:
    """(step, time in ms) of each stage run's training loss, by fold/stage."""
    ids = json.loads((workspace / "runs" / run / "mlflow_runs.json").read_text())["children"]
    return {
        f"fold{fold}/{stage}": sorted(
            (m.step, m.timestamp) for m in client.get_metric_history(rid, "train_loss")
        )
        for fold, stages in ids.items()
        for stage, rid in stages.items()
    }


@pytest.mark.slurm
def test_a_job_requeued_at_its_limit_or_cancelled_and_resubmitted_resumes(
    slurm, tiny_data, tmp_path
):
    from orchestrator.tracking import tracking_client

    ws, run, epochs = tmp_path / "ws", "resumed", 6
    job, script = _submit(slurm, ws, "cv", "--dataset", str(tiny_data), "--workspace", str(ws),
                          "--config", "tiny", "--epochs", str(epochs), "--run", run)  # fmt: skip
    stage = ws / "runs" / run / "fold1" / "sed"
    deadline = time.monotonic() + 600
    while not (stage / "last.pt").exists():
        assert time.monotonic() < deadline and slurm.job(job).get("JobState") in (
            "PENDING",
            "RUNNING",
        ), slurm.log(ws, job)[-3000:]
        time.sleep(1)
    time.sleep(3)  # the epoch's metrics reach MLflow just after its checkpoint
    _squeue(slurm)
    # 1. the time limit's signal (what --signal=B:USR1@lead sends): the job requeues itself
    limit_at = time.time() * 1000
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    info = slurm.wait(job, ("PENDING",), 120)
    assert info["Restarts"] == "1", info
    print(f"after USR1: JobState={info['JobState']} Reason={info['Reason']} Restarts=1")
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")  # skip the 2-min hold
    slurm.wait(job, ("RUNNING",), 120)
    assert "requeued; it resumes where it stopped" in slurm.log(ws, job)
    # 2. scancel once the requeued job trained further, then the same script again
    deadline = time.monotonic() + 600
    while not (ws / "runs" / run / "fold1" / "doa" / "last.pt").exists():
        assert time.monotonic() < deadline, slurm.log(ws, job)[-3000:]
        time.sleep(1)
    cancel_at = time.time() * 1000
    slurm.run("scancel", job)
    slurm.wait(job, ("CANCELLED",), 120)
    time.sleep(3)
    assert not [p for p in _leftovers(slurm) if f"seld-ray-{job}" in p], _leftovers(slurm)
    again = slurm.run("sbatch", "--parsable", str(script)).strip()
    slurm.jobs.append(again)
    print(f"$ sbatch {script.name}   # the same script, after scancel\n{again}")
    info = slurm.wait(again, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 900)
    assert info["JobState"] == "COMPLETED", slurm.log(ws, again)[-3000:]
    print(_completed(slurm, again))
    assert (ws / "runs" / run / "metrics.json").exists()
    # every epoch of every stage was trained once: none again after the signal or the cancel,
    # and the epochs before them were kept
    history = _history(tracking_client(f"sqlite:///{ws / 'mlflow.db'}"), ws, run)
    for name, steps in history.items():
        assert [s for s, _ in steps] == list(range(1, epochs + 1)), (name, steps)
    before = [s for s, t in history["fold1/sed"] if t < limit_at]
    between = [s for s, t in history["fold1/doa"] if t < cancel_at]
    assert before and between, history
    print(
        f"fold1/sed: epochs {before} before the limit's signal, the rest after the requeue; "
        f"fold1/doa: epochs {between} before scancel, the rest in job {again}"
    )
