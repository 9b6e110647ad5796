"""Running ``cv``, ``sweep`` or ``tune`` on a Slurm allocation: a batch script, and a launcher
that starts Ray across the allocation, runs the command in it and stops Ray again.

``seld-orch slurm submit CMD ARGS`` writes ``<workspace>/slurm/<name>.sbatch`` from
:class:`SlurmOptions` (the one place the defaults live) and hands it to ``sbatch``. The
script's only command is ``seld-orch slurm run CMD ARGS``, which also works inside an
``salloc``. On the allocation (:class:`Allocation`, read from Slurm's environment) it:

- starts the Ray head on the first node as its own child, and one Ray worker on every other
  node with ``srun`` (one task per node, the CPUs and GPUs Slurm granted there);
- runs ``seld-orch CMD ARGS`` against that cluster (``RAY_ADDRESS``) and waits for it;
- stops the Ray processes it started, and only those, however the command ended.

Security. On one node every Ray service listens on 127.0.0.1 only (the head is started as the
embedded local Ray is, with Ray's cluster switch off), and nothing listens elsewhere. Across
nodes the nodes talk over the address of the allocation's interface (``--interface``, else the
address the head's host name resolves to); Ray's dashboard stays on 127.0.0.1, and token
authentication is on: the token is made for the job, reaches the nodes through the job's
environment (``RAY_AUTH_TOKEN``, which only the job's user can read) and is never written to a
file.

Time limits. The script asks Slurm for ``USR1`` a few minutes before the limit
(``--signal=B:USR1@lead``). The launcher then stops the command as Ctrl-C would (every epoch
already finished is checkpointed), stops Ray and requeues the job (``scontrol requeue``); the
requeued job runs the same command, which resumes from the last epoch. A job cancelled with
``scancel`` and submitted again resumes the same way: the runs are found by their names in the
workspace.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

#: the commands that may run in an allocation
COMMANDS = ("cv", "sweep", "tune")

#: how long the launcher waits for the Ray nodes to join, in seconds
JOIN_TIMEOUT_S = 300.0
#: how long a stopped command or Ray node has to end before it is killed, in seconds
STOP_GRACE_S = 30.0


class SlurmError(RuntimeError):
    """A Slurm job that cannot be written, submitted or run, said in one line."""


_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")


@dataclass(frozen=True)
class SlurmOptions:
    """What a job asks Slurm for, with its defaults. ``partition`` and ``account``: the
    cluster's default when None. ``gpus_per_node`` 0: a CPU job. ``time``: Slurm's
    ``[days-]hours:minutes:seconds``. ``signal_lead_s``: how long before the time limit the
    launcher is told to stop and requeue (Slurm may send it up to a minute late)."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int = 8
    mem_per_node: str | None = None
    time: str = "04:00:00"
    partition: str | None = None
    account: str | None = None
    signal_lead_s: int = 300
    job_name: str = "seld"
    extra: tuple[str, ...] = field(default_factory=tuple)
    #: the network interface the nodes share (``ib0``); None: the head's host name's address
    interface: str | None = None

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise SlurmError(f"--nodes must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise SlurmError(f"--gpus-per-node must be 0 or more, got {self.gpus_per_node}")
        if self.cpus_per_node < 1:
            raise SlurmError(f"--cpus-per-node must be at least 1, got {self.cpus_per_node}")
        if not _TIME.match(self.time):
            raise SlurmError(
                f"--time {self.time!r} is not Slurm's [days-]hours:minutes:seconds form"
            )
        if self.signal_lead_s < 60:
            raise SlurmError(
                f"--signal-lead {self.signal_lead_s} s is too short: Slurm checks its signals "
                "once a minute"
            )
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.job_name):
            raise SlurmError(f"job name {self.job_name!r}: letters, digits, '.', '_', '-' only")


def batch_script(
    options: SlurmOptions,
    command: Sequence[str],
    output_dir: Path,
    workdir: Path,
    python: str = sys.executable,
) -> str:
    """The sbatch script that runs ``seld-orch COMMAND`` on an allocation of ``options``:
    Slurm's log in ``output_dir`` (appended to by a requeued job), run from ``workdir`` (so
    relative paths in the command mean what they meant where it was submitted)."""
    if not command or command[0] not in COMMANDS:
        raise SlurmError(f"a Slurm job runs one of {', '.join(COMMANDS)}, not {command[:1]}")
    directives = [
        f"--job-name={options.job_name}",
        f"--nodes={options.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={options.cpus_per_node}",
        f"--time={options.time}",
        f"--signal=B:USR1@{options.signal_lead_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={output_dir / '%x-%j.out'}",
        f"--chdir={workdir}",
    ]
    if options.gpus_per_node:
        directives.append(f"--gpus-per-node={options.gpus_per_node}")
    if options.mem_per_node:
        directives.append(f"--mem={options.mem_per_node}")
    if options.partition:
        directives.append(f"--partition={options.partition}")
    if options.account:
        directives.append(f"--account={options.account}")
    directives += list(options.extra)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "#!/bin/bash",
        f"# Written by `seld-orch slurm submit` on {stamp}. Submit it again to resume:",
        "# finished work is kept and unfinished runs continue from their last epoch.",
        *(f"#SBATCH {shlex.quote(d)}" for d in directives),
        "set -euo pipefail",
        # exec: the launcher is the batch step's main process, so Slurm's USR1 reaches it
        "exec "
        + shlex.join(
            [python, "-m", "orchestrator.cli", "slurm", "run"]
            + ([f"--interface={options.interface}"] if options.interface else [])
            + ["--", *command]
        ),
        "",
    ]
    return "\n".join(lines)


def submit(script: Path, env: Mapping[str, str] | None = None) -> str:
    """``sbatch`` the script; its job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError("sbatch is not on PATH: run this on a Slurm login node")
    done = subprocess.run(
        [sbatch, "--parsable", str(script)],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
    )
    if done.returncode != 0:
        raise SlurmError(f"sbatch {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def write_script(path: Path, text: str) -> None:
    """Write the script through a temporary name (no half-written script is left)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


@dataclass(frozen=True)
class Allocation:
    """The Slurm allocation this process runs in: its job, its nodes (the first holds the
    head), and on this node the CPUs and GPUs Slurm granted."""

    job_id: str
    nodes: tuple[str, ...]
    cpus: int
    gpus: int
    restarts: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Allocation:
        job = env.get("SLURM_JOB_ID")
        if not job:
            raise SlurmError(
                "not inside a Slurm allocation (no SLURM_JOB_ID): submit with "
                "`seld-orch slurm submit`, or run this in `salloc`"
            )
        nodes = _hostnames(env.get("SLURM_JOB_NODELIST", ""), env)
        return cls(
            job_id=job,
            nodes=nodes,
            cpus=int(env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE") or 1),
            gpus=_granted_gpus(env),
            restarts=int(env.get("SLURM_RESTART_COUNT") or 0),
        )


def _hostnames(nodelist: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """A Slurm node list (``gpu[01-04],cpu7``) expanded by Slurm's own ``scontrol``."""
    if not nodelist:
        raise SlurmError("SLURM_JOB_NODELIST is empty")
    if not re.search(r"[\[,]", nodelist):
        return (nodelist,)
    done = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, env=dict(env)
    )
    if done.returncode != 0:
        raise SlurmError(f"scontrol show hostnames {nodelist}: {done.stderr.strip()}")
    return tuple(done.stdout.split())


def _granted_gpus(env: Mapping[str, str]) -> int:
    """The GPUs Slurm granted on this node: its CUDA_VISIBLE_DEVICES where it set one, else
    SLURM_GPUS_ON_NODE, else none."""
    visible = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible not in ("NoDevFiles", "-1"):
        return len([d for d in visible.split(",") if d])
    return int(env.get("SLURM_GPUS_ON_NODE") or 0)


def node_address(interface: str | None) -> str:
    """This node's IPv4 address on ``interface`` (an allocation's network, ``ib0``), else the
    address its host name resolves to."""
    if interface:
        import psutil

        for addr in psutil.net_if_addrs().get(interface, []):
            if addr.family == socket.AF_INET:
                return addr.address
        raise SlurmError(f"interface {interface!r} has no IPv4 address on {socket.gethostname()}")
    address = socket.gethostbyname(socket.gethostname())
    if address.startswith("127."):
        raise SlurmError(
            f"{socket.gethostname()} resolves to {address}: name the allocation's network "
            "interface with --interface"
        )
    return address


def free_port(host: str) -> int:
    """A TCP port free on ``host`` now (another job's Ray on a shared node keeps its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_start_head(alloc: Allocation, host: str, temp_dir: Path) -> tuple[list[str], str]:
    """The ``ray start`` of the head (blocking, so that it is this launcher's child), and the
    cluster's address."""
    port = free_port(host)
    command = [
        _ray(),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={host}",
        f"--port={port}",
        f"--num-cpus={alloc.cpus}",
        f"--num-gpus={alloc.gpus}",
        f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={free_port('127.0.0.1')}",
        f"--ray-client-server-port={free_port(host)}",
        f"--dashboard-agent-listen-port={free_port(host)}",
    ]
    return command, f"{host}:{port}"


def ray_start_worker(address: str, host: str, cpus: int, gpus: int, temp_dir: Path) -> list[str]:
    """The ``ray start`` of a worker node joining ``address`` (blocking)."""
    return [
        _ray(),
        "start",
        "--block",
        "--disable-usage-stats",
        f"--address={address}",
        f"--node-ip-address={host}",
        f"--num-cpus={cpus}",
        f"--num-gpus={gpus}",
        f"--temp-dir={temp_dir}",
        f"--dashboard-agent-listen-port={free_port(host)}",
    ]


def _ray() -> str:
    """The ``ray`` beside this interpreter (the environment the job runs in)."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


def job_environment(alloc: Allocation, token: str, one_node: bool) -> dict[str, str]:
    """The environment of the job's Ray nodes and command: token authentication with the
    job's token; on one node Ray's cluster switch off, so that every service is on loopback."""
    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    # a node is stopped after the command ended: nothing is left to drain (Ray would wait 30 s)
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    if one_node:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def _alive_nodes(address: str, env: Mapping[str, str]) -> int:
    """How many nodes of the cluster at ``address`` are alive (0 while it does not answer)."""
    probe = (
        "import sys, logging, ray\n"
        "ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)\n"
        "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe, address],
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return 0
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines else 0


def _stop(process: subprocess.Popen, what: str, say: Callable[[str], None]) -> None:
    """SIGTERM a process this launcher started (``ray start --block`` then stops the node's
    processes, ``srun`` passes it on to its tasks); SIGKILL its process group after the grace
    time."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        say(f"{what} did not stop in {STOP_GRACE_S:.0f} s; killed")
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything of its group still left
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


class _Signals:
    """USR1 (the time limit is near): stop the command and requeue the job. TERM or INT
    (``scancel``, Ctrl-C): stop the command. Either is passed on to the command as SIGTERM,
    which it handles as Ctrl-C."""

    def __init__(self) -> None:
        self.requeue = False
        self.stopping = False
        self.command: subprocess.Popen | None = None
        handled = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
        self._previous = {s: signal.signal(s, self._handle) for s in handled}

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:
            self.requeue = True
        self.stopping = True
        if self.command is not None and self.command.poll() is None:
            try:
                os.killpg(self.command.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def run_in_allocation(
    command: Sequence[str],
    interface: str | None = None,
    say: Callable[[str], None] = print,
    env: Mapping[str, str] = os.environ,
) -> int:
    """Start Ray across the allocation, run ``seld-orch COMMAND`` in it, stop Ray; the
    command's exit status (0 when the job was requeued at its time limit)."""
    if not command or command[0] not in COMMANDS:
        raise SlurmError(f"a Slurm job runs one of {', '.join(COMMANDS)}, not {command[:1]}")
    alloc = Allocation.from_env(env)
    one_node = len(alloc.nodes) == 1
    host = "127.0.0.1" if one_node else node_address(interface)
    temp_dir = Path("/tmp") / f"seld-ray-{alloc.job_id}"
    job_env = job_environment(alloc, secrets.token_hex(32), one_node)
    again = f", restart {alloc.restarts}" if alloc.restarts else ""
    say(
        f"job {alloc.job_id}{again}: {len(alloc.nodes)} node(s) {','.join(alloc.nodes)}, "
        f"{alloc.cpus} CPUs and {alloc.gpus} GPUs per node; Ray on "
        f"{'127.0.0.1 only' if one_node else host}, token authentication on"
    )
    signals = _Signals()
    started: list[tuple[subprocess.Popen, str]] = []
    code = 1
    try:
        head_cmd, address = ray_start_head(alloc, host, temp_dir)
        temp_dir.mkdir(parents=True, exist_ok=True)
        head_log = temp_dir / "ray-start.log"  # Ray's start-up banner, shown if it fails
        with head_log.open("w") as log:
            head = subprocess.Popen(
                head_cmd, env=job_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append((head, "the Ray head"))
        if not one_node:
            worker_cmd = [
                "srun",
                f"--nodes={len(alloc.nodes) - 1}",
                f"--ntasks={len(alloc.nodes) - 1}",
                "--ntasks-per-node=1",
                f"--exclude={alloc.nodes[0]}",
                "--kill-on-bad-exit=1",
                sys.executable,
                "-m",
                "orchestrator.cli",
                "slurm",
                "worker",
                f"--address={address}",
                f"--temp-dir={temp_dir}",
                *([f"--interface={interface}"] if interface else []),
            ]
            started.append(
                (
                    subprocess.Popen(worker_cmd, env=job_env, start_new_session=True),
                    "the Ray workers",
                )
            )
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while (alive := _alive_nodes(address, job_env)) < len(alloc.nodes):
            if signals.stopping:  # before the command started: nothing to keep
                break
            for process, what in started:
                if process.poll() is not None:
                    tail = head_log.read_text(errors="replace").strip().splitlines()[-5:]
                    raise SlurmError(
                        f"{what} ended with exit {process.returncode} at start: " + " | ".join(tail)
                    )
            if time.monotonic() > deadline:
                raise SlurmError(
                    f"{alive} of {len(alloc.nodes)} Ray nodes joined {address} in "
                    f"{JOIN_TIMEOUT_S:.0f} s"
                )
            time.sleep(2)
        if not signals.stopping:
            say(f"Ray: {alive} node(s) at {address}")
            # on one node the command keeps the cluster switch off too: with it on, Ray would
            # turn the address 127.0.0.1 into the machine's network address
            run_env = {**job_env, "RAY_ADDRESS": address}
            say("running: seld-orch " + shlex.join(command))
            signals.command = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", *command],
                env=run_env,
                start_new_session=True,
            )
            if signals.stopping:  # a signal between the start and the line above
                os.killpg(signals.command.pid, signal.SIGTERM)
            code = signals.command.wait()
            if code and signals.stopping:
                say(f"the command stopped on the job's signal (exit {code}); its work is kept")
    finally:
        if signals.command is not None:
            _stop(signals.command, "the command", say)
        for process, what in reversed(started):
            _stop(process, what, say)
        shutil.rmtree(temp_dir, ignore_errors=True)
        signals.restore()
    if signals.requeue:
        _requeue(alloc, say, env)
        return 0
    return code


def _requeue(alloc: Allocation, say: Callable[[str], None], env: Mapping[str, str]) -> None:
    done = subprocess.run(
        ["scontrol", "requeue", alloc.job_id], capture_output=True, text=True, env=dict(env)
    )
    if done.returncode != 0:
        raise SlurmError(
            f"the time limit is near and `scontrol requeue {alloc.job_id}` failed "
            f"({done.stderr.strip()}): submit the same script again to resume"
        )
    say(f"the time limit is near: job {alloc.job_id} requeued; it resumes where it stopped")


def run_worker(address: str, temp_dir: Path, interface: str | None) -> int:
    """On a worker node (an ``srun`` task of :func:`run_in_allocation`): run its Ray node
    until the launcher stops it."""
    alloc = Allocation.from_env()
    host = node_address(interface)
    command = ray_start_worker(address, host, alloc.cpus, alloc.gpus, temp_dir)
    try:
        return subprocess.call(command)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
