"""Sweeps as Ray jobs: ``seld-orch submit cv|tune ...``, ``seld-orch status``, ``seld-orch logs``.

A submitted command is the same ``seld-orch`` command, run as the job's entrypoint on the
cluster's head node with this project as the job's working directory (uploaded by Ray, without
the virtual environment, git data, workspaces or data). Ray sets ``RAY_ADDRESS`` in the job, so
the command joins the cluster instead of starting a local Ray (``ray_utils.ray_session``).

The client talks to the Ray dashboard's Jobs API: ``--address``, else ``RAY_API_SERVER_ADDRESS``
or ``RAY_ADDRESS``, else ``http://127.0.0.1:8265`` (``ray dashboard cluster.yaml`` forwards a
cluster's dashboard there). When the cluster uses token authentication the token is sent from
``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seld.errors import ClusterError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
COMMANDS = ("cv", "sweep", "tune")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: never uploaded with the job (gitignore-style patterns, as Ray's runtime_env excludes)
EXCLUDES = [
    ".venv",
    ".git",
    "/workspace",
    "/demo-workspace",
    "/data",
    "mlruns",
    "mlartifacts",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "*.h5",
    "*.wav",
    "*.db",
]
#: options whose value is a path: relative paths would land in the job's temporary folder
PATH_OPTIONS = ("--dataset", "--workspace")
#: options that must be given, as absolute paths the cluster's nodes share
REQUIRED_OPTIONS = ("--workspace",)


class SubmitError(ClusterError, RuntimeError):
    """A job that cannot be submitted or inspected, with the reason."""


def project_root() -> Path:
    """The source tree to upload: this package's checkout (an editable install)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists() or not (root / "orchestrator").is_dir():
        raise SubmitError(
            f"{root} is not the project's source tree (install it with `pip install -e`)"
        )
    return root


def resolve_address(address: str | None = None) -> str:
    if address:
        return address
    for name in ADDRESS_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return DEFAULT_ADDRESS


def auth_headers() -> dict[str, str]:
    """The cluster token as an HTTP header, when one is available and auth is not disabled."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
        try:
            token = Path(path).read_text().strip()
        except OSError:
            return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _explicit_address() -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS override the address it is given: hide the variables while
    it is built, so that ``--address`` wins."""
    saved = {name: os.environ.pop(name) for name in ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def client(address: str | None = None):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        with _explicit_address():
            return JobSubmissionClient(url, headers=auth_headers())
    except AuthenticationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SubmitError(
            f"the Ray cluster at {url} refused this client: {first} (the cluster uses token "
            "authentication: copy its token, e.g. `ray exec cluster.yaml 'cat ~/.ray/auth_token'`, "
            "into RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SubmitError(
            f"no Ray Jobs API at {url}: {first} (is the cluster up? forward its dashboard with "
            "`ray dashboard cluster.yaml`, or pass --address / set RAY_ADDRESS)"
        ) from None


def cluster_ray_version(jobs: Any) -> str | None:
    """The Ray version the cluster's dashboard reports (``/api/version``)."""
    version = getattr(jobs, "_server_ray_version", None)  # read by the client as it connects
    if version:
        return str(version)
    try:
        response = jobs._do_request("GET", "/api/version")
        return str(response.json()["ray_version"])
    except (ConnectionError, RuntimeError, ValueError, KeyError, AttributeError):
        return None


def check_cluster_version(url: str, theirs: str | None, ours: str) -> None:
    """Refuse a cluster that runs another Ray than this machine, naming both versions."""
    from orchestrator.cluster import version_problem

    if theirs is None:
        return  # a dashboard too old to say: Ray's client has already refused it
    problem = version_problem(f"the cluster at {url}", theirs, ours)
    if problem:
        raise SubmitError(problem)


def _option_values(args: Sequence[str], name: str) -> list[str]:
    values = []
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def check_args(command: str, args: Sequence[str]) -> None:
    """Refuse what could only go wrong on a cluster: relative or missing shared paths."""
    if command not in COMMANDS:
        raise SubmitError(f"cannot submit {command!r}: one of {', '.join(COMMANDS)}")
    if "--help" in args:
        return
    for name in REQUIRED_OPTIONS:
        if not _option_values(args, name):
            raise SubmitError(
                f"{name} is required: an absolute path that every node of the cluster shares "
                "(for example /mnt/seld/workspace)"
            )
    if command == "sweep" and args and not args[0].startswith("-"):
        spec = args[0]
        if (spec.endswith((".yaml", ".yml")) or "/" in spec) and not Path(spec).is_absolute():
            raise SubmitError(
                f"sweep file {spec}: a relative path would resolve in the job's temporary "
                "working directory; give an absolute path on storage the nodes share"
            )
    for name in PATH_OPTIONS:
        for value in _option_values(args, name):
            if "://" in value:
                raise SubmitError(
                    f"{name} {value}: features and runs are files read and written in place; "
                    "give a path on a file system every node mounts (NFS, EFS), not a URI"
                )
            if not Path(value).is_absolute():
                raise SubmitError(
                    f"{name} {value}: a relative path would resolve in the job's temporary "
                    "working directory; give an absolute path on storage the nodes share"
                )


def entrypoint(command: str, args: Sequence[str]) -> str:
    """The job's shell command: the same ``seld-orch`` command, run from the uploaded tree."""
    return shlex.join(["python", "-m", "orchestrator.cli", command, *args])


def submit(
    command: str,
    args: Sequence[str],
    *,
    address: str | None = None,
    root: Path | None = None,
    submission_id: str | None = None,
    env_vars: dict[str, str] | None = None,
    agent_wait_s: float = 120.0,
) -> str:
    """Submit ``seld-orch COMMAND ARGS`` as a Ray job and return its id."""
    check_args(command, args)
    root = root or project_root()
    runtime_env = {
        "working_dir": str(root),
        "excludes": EXCLUDES,
        "env_vars": {
            # fold jobs report once per epoch; Ray Train's 2 s default check slows short epochs
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
            "PYTHONUNBUFFERED": "1",
            **(env_vars or {}),
        },
    }
    import ray

    jobs = client(address)
    check_cluster_version(resolve_address(address), cluster_ray_version(jobs), ray.__version__)
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return jobs.submit_job(
                entrypoint=entrypoint(command, args),
                runtime_env=runtime_env,
                submission_id=submission_id,
                metadata={"seld_command": command},
            )
        except RuntimeError as exc:
            # a cluster that has just started answers before its job agent is up
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2)
                continue
            url = resolve_address(address)
            raise SubmitError(f"submitting to {url} failed: {exc}") from None


def _check_id(job_id: str) -> None:
    if not job_id or not job_id.strip():
        raise SubmitError("no job id given (`seld-orch status` lists the jobs)")


def job_info(job_id: str, address: str | None = None) -> dict[str, Any]:
    _check_id(job_id)
    jobs = client(address)
    try:
        info = jobs.get_job_info(job_id)
    except RuntimeError as exc:
        raise SubmitError(f"job {job_id}: {exc}") from None
    return _info_dict(info)


def list_jobs(address: str | None = None) -> list[dict[str, Any]]:
    jobs = client(address)
    return [_info_dict(info) for info in jobs.list_jobs()]


def _info_dict(info: Any) -> dict[str, Any]:
    def seconds(ms: int | None) -> float | None:
        return None if ms is None else ms / 1000

    start, end = seconds(info.start_time), seconds(info.end_time)
    return {
        "job_id": info.submission_id or info.job_id,
        "status": str(getattr(info.status, "value", info.status)),
        "entrypoint": info.entrypoint,
        "message": info.message,
        "start_time": start,
        "end_time": end,
        "elapsed_s": None if start is None else round((end or time.time()) - start, 1),
    }


def wait(
    job_id: str,
    address: str | None = None,
    *,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll until the job ends (or ``timeout_s`` passes) and return its last info."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        info = job_info(job_id, address)
        if on_poll is not None:
            on_poll(info)
        if info["status"] in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return info
        time.sleep(poll_s)


def logs(job_id: str, address: str | None = None) -> str:
    _check_id(job_id)
    jobs = client(address)
    try:
        return jobs.get_job_logs(job_id)
    except RuntimeError as exc:
        raise SubmitError(f"job {job_id}: {exc}") from None


def follow_logs(job_id: str, write: Callable[[str], None], address: str | None = None) -> None:
    """Write the job's output as it comes, until the job ends."""
    _check_id(job_id)
    jobs = client(address)

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:
        raise SubmitError(f"job {job_id}: {exc}") from None
