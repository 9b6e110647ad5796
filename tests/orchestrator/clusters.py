"""Real Ray clusters on this machine, for the cluster tests: processes of their own, stopped by
process group and temp dir, never by ``ray stop`` (which stops every Ray of the user).

- :class:`LocalCluster`: a head and fixed worker nodes started with ``ray start``.
- :class:`SimulatedCluster`: a head with Ray's real autoscaler (v2) on the fake multi-node
  provider, its node types derived from the shipped ``cluster.yaml`` by
  :func:`orchestrator.cluster.local_autoscaling_config`; worker "nodes" are raylets it starts
  and stops here. Token authentication on, and an MLflow tracking server beside the head, as
  ``cluster.yaml``'s head start commands run them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) of every process."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        found[int(proc.name)] = (int(fields[1]), int(fields[3]), cmdline)
    return found


def descendants(roots: set[int], table: dict[int, tuple[int, int, str]]) -> set[int]:
    family, grown = set(roots), True
    while grown:
        grown = False
        for pid, (ppid, _, _) in table.items():
            if ppid in family and pid not in family:
                family.add(pid)
                grown = True
    return family


def wait_for_jobs_api(
    dashboard: str, token: str, head: subprocess.Popen, log: Path, timeout_s: float
) -> None:
    """Until a trivial job has run: the dashboard and its job agent are up."""
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout_s
    job = None
    while True:
        try:
            client = JobSubmissionClient(dashboard, headers=headers)
            job = job or client.submit_job(entrypoint="python -c pass")
            if client.get_job_status(job) == "SUCCEEDED":
                return
        except (ConnectionError, RuntimeError):
            pass
        if time.monotonic() > deadline or head.poll() is not None:
            raise RuntimeError(f"no Ray Jobs API; see {log}")
        time.sleep(1)


def client_env(token: str) -> dict[str, str]:
    """A user's shell outside the cluster: this machine's environment, the cluster's token,
    nothing of the cluster's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    return env | ({"RAY_AUTH_TOKEN": token} if token else {})


class _Cluster:
    """What both clusters share: a private temp dir, their processes, each in a session of its
    own (so that it is stopped as a whole), and the dashboard's address."""

    temp_dir: str
    env: dict[str, str]
    processes: list[subprocess.Popen]
    dashboard_port: int

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, command: list[str]) -> None:
        with open(Path(self.temp_dir) / f"{name}.log", "w") as log:
            self.processes.append(
                subprocess.Popen(
                    command,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session: stopped as a whole at the end
                )
            )

    def our_processes(self) -> list[str]:
        """Processes of this cluster still running: in a session it started, under one, or
        naming its temp dir."""
        table = _processes()
        sessions = {p.pid for p in self.processes}
        roots = {
            pid for pid, (_, sid, cmd) in table.items() if sid in sessions or self.temp_dir in cmd
        }
        return [f"{pid}: {table[pid][2][:120]}" for pid in sorted(descendants(roots, table))]

    def stop(self) -> None:
        for process in reversed(self.processes):  # the last started first
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(3):  # what they left behind (a fake node's raylet, workers)
            left = [int(line.split(":", 1)[0]) for line in self.our_processes()]
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not left:
                break
            time.sleep(1)
        if os.environ.get("SELD_TEST_KEEP_CLUSTER_LOGS"):  # to read a failed test's Ray logs
            print(f"cluster logs kept in {self.temp_dir}")
        elif not self.our_processes():
            shutil.rmtree(self.temp_dir, ignore_errors=True)


class SimulatedCluster(_Cluster):
    """An autoscaling Ray cluster on this machine, shaped by a ``ray up`` cluster definition."""

    def __init__(self, cluster_yaml: Path, idle_timeout_minutes: float = 0.1):
        from orchestrator.cluster import (
            FAKE_HEAD_NODE_ID,
            head_resources,
            local_autoscaling_config,
        )

        self.temp_dir = tempfile.mkdtemp(prefix="seldas", dir="/tmp")  # short: socket paths
        self.port, self.dashboard_port, self.mlflow_port = free_port(), free_port(), free_port()
        config = local_autoscaling_config(
            cluster_yaml,
            gcs_address=f"127.0.0.1:{self.port}",
            idle_timeout_minutes=idle_timeout_minutes,
        )
        self.config_path = Path(self.temp_dir) / "autoscaling.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.head_id = FAKE_HEAD_NODE_ID
        self.token = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        self.env = env | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `python`
            # the fake provider, autoscaler v2, a one-second tick (as Ray's own tests set them)
            "RAY_FAKE_CLUSTER": "1",
            "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            # as cluster.yaml's head start line: token auth, and the jobs log to the head's MLflow
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job workers beside the server
        }
        self.processes: list[subprocess.Popen] = []
        try:
            self._start_mlflow()
            resources = head_resources(config)
            self._start(
                "head",
                [str(BIN / "ray"), "start", "--head", "--block", f"--port={self.port}",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                 "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                 f"--num-cpus={int(resources.get('CPU', 0))}",
                 f"--num-gpus={int(resources.get('GPU', 0))}",
                 f"--autoscaling-config={self.config_path}", "--disable-usage-stats",
                 # ports of their own, beside any other Ray on this machine
                 f"--dashboard-agent-listen-port={free_port()}",
                 f"--ray-client-server-port={free_port()}",
                 "--object-store-memory=200000000"],
            )  # fmt: skip
            self.wait_for_dashboard()
            self.wait_for_mlflow()
        except BaseException:
            self.stop()
            raise

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def _start_mlflow(self) -> None:
        store = Path(self.temp_dir) / "mlflow"
        store.mkdir()
        self._start(
            "mlflow",
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}/mlflow.db",
             "--artifacts-destination", str(store / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.mlflow_port), "--workers", "1"],
        )  # fmt: skip

    def wait_for_mlflow(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.mlflow_uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no MLflow server; see {self.temp_dir}/mlflow.log")
            time.sleep(1)

    def wait_for_dashboard(self, timeout_s: float = 240) -> None:
        wait_for_jobs_api(self.dashboard, self.token, self.processes[-1],
                          Path(self.temp_dir) / "head.log", timeout_s)  # fmt: skip

    # --- what the autoscaler does ------------------------------------------------------------

    def status(self) -> str:
        """``ray status`` of the cluster."""
        return subprocess.run(
            [str(BIN / "ray"), "status", f"--address=127.0.0.1:{self.port}"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout

    def live_nodes(self, node_type: str) -> int:
        """Nodes of ``node_type`` that are active, idle or pending (``ray status`` keeps removed
        ones under "Recent failures", which this leaves out)."""
        text = self.status()
        sections = re.split(r"^(Active|Idle|Pending|Recent failures):$", text, flags=re.M)
        count = 0
        for title, body in zip(sections[1::2], sections[2::2], strict=True):
            if title != "Recent failures":
                count += sum(int(n) for n in re.findall(rf"^ (\d+) {node_type}\b", body, re.M))
        return count

    def autoscaler_log(self) -> str:
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        return "".join(p.read_text(errors="replace") for p in sorted(logs.glob("monitor*.log")))

    def kill_node(self, node_id: str) -> list[int]:
        """Terminate a worker node at once, as a cloud instance dies: its raylet and every
        process under it (agents, workers), with SIGKILL. Returns the pids killed."""
        if node_id == self.head_id:
            raise ValueError("not the head")
        table = _processes()
        roots = {pid for pid, (_, _, cmd) in table.items() if f"--node_id={node_id}" in cmd}
        if not roots:
            raise RuntimeError(f"no raylet of node {node_id}")
        doomed = descendants(roots, table)
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(doomed)

    # --- the end -------------------------------------------------------------------------------


class LocalCluster(_Cluster):
    """A head node and worker nodes started with ``ray start --block`` in a private temp dir.

    Only this cluster's processes are stopped: each ``ray start --block`` process gets SIGTERM
    and stops the processes it started; anything left of its process group is killed. Never
    ``ray stop``, which would stop every Ray on the machine."""

    def __init__(self, head_cpus: int = 1, workers: tuple[int, ...] = (1,)):
        self.temp_dir = tempfile.mkdtemp(prefix="seldray", dir="/tmp")  # short: socket paths
        self.port, self.dashboard_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `python`
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once, nothing to drain
            # token authentication, as Ray enables by default, with this cluster's own token
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
        }
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(name, None)
        self.processes: list[subprocess.Popen] = []
        try:
            self._start_nodes(head_cpus, workers)
        except BaseException:
            self.stop()
            raise

    def _start_nodes(self, head_cpus: int, workers: tuple[int, ...]) -> None:
        common = [
            "--block",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            "--object-store-memory=200000000",
        ]
        self._start(
            "head",
            [
                str(BIN / "ray"),
                "start",
                "--head",
                f"--port={self.port}",
                f"--temp-dir={self.temp_dir}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--num-cpus={head_cpus}",
                "--num-gpus=0",
                *common,
            ],
        )
        self.wait_for_dashboard()
        for i, cpus in enumerate(workers):
            # a node of its own on this machine: its own temp dir, so that its runtime-env agent
            # never deletes the job's unpacked working dir under the head's feet
            node_dir = Path(self.temp_dir) / f"w{i}"
            node_dir.mkdir()
            self._start(
                f"worker{i}",
                [
                    str(BIN / "ray"),
                    "start",
                    f"--address=127.0.0.1:{self.port}",
                    f"--num-cpus={cpus}",
                    f"--temp-dir={node_dir}",
                    *common,
                ],
            )
        self.wait_for_nodes(1 + len(workers))

    def wait_for_dashboard(self, timeout_s: float = 240) -> None:
        wait_for_jobs_api(self.dashboard, self.env["RAY_AUTH_TOKEN"], self.processes[0],
                          Path(self.temp_dir) / "head.log", timeout_s)  # fmt: skip

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                [str(BIN / "ray"), "status", f"--address=127.0.0.1:{self.port}"],
                env=self.env,
                capture_output=True,
                text=True,
            ).stdout
            if len(re.findall(r"^ \d+ node_", out, re.MULTILINE)) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"{count} nodes did not join; see {self.temp_dir}/*.log")
