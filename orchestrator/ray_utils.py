"""Starting and joining Ray: an embedded local instance by default, a cluster by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import ray

#: a resource only the head node has: where the driver, the MLflow server and the orchestration
#: (fold jobs, Ray Train's controllers, the metrics sink) live, so that a worker node runs only
#: training workers and its loss or idle removal never takes a fold job with it
HEAD_NODE = {"node:__internal_head__": 0.001}

log = logging.getLogger(__name__)
T = TypeVar("T")
I = TypeVar("I")


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, dashboard: bool = False
) -> Iterator[str | None]:
    """Use the running Ray if this process already joined one; otherwise start a new local
    instance (or join ``address``) for the duration of the block, bound to 127.0.0.1; another
    Ray running on the same machine is left alone.

    A local instance runs without the dashboard unless ``dashboard``. A search that stops
    trials needs it: the dashboard serves Ray's state API, through which Ray Train's
    placement-group cleaner sees that a killed fold job's controller is dead and frees the
    CPUs its workers held. Without it those CPUs stay reserved until the driver exits, and
    the trials that follow wait for them forever. It costs about 0.3 GB of memory (PSS) and 1 s.

    Yields the dashboard's address (``127.0.0.1:8265``) when this block started one, else None.

    Without ``address``, ``RAY_ADDRESS`` names the cluster to join, as for ``ray.init()``: a
    command submitted as a Ray job (``seld-orch submit``) finds it set and joins the cluster
    that runs the job instead of starting a local Ray."""
    if ray.is_initialized():
        yield None
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Ray Train V2 waits about one controller health-check interval (2 s by default) per
    # report; with one report per epoch that dominates short CPU epochs
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    # Tune's console output: none from Tune itself (verbose=0 is silent only with the classic
    # reporter); the CLI prints its own progress and results
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict = {
        "include_dashboard": dashboard,
        "logging_level": logging.WARNING,
        # workers' own logs stay in Ray's session logs; the CLI shows progress instead
        "log_to_driver": False,
    }
    if address:
        kwargs["address"] = address
    else:
        # "local": always a new embedded instance, never one that `ray start` left running
        # on this machine (plain ray.init() would join that)
        kwargs["address"] = "local"
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
        kwargs["_node_ip_address"] = "127.0.0.1"
        if dashboard:
            kwargs["dashboard_host"] = "127.0.0.1"
    with _single_machine(not address):
        context = ray.init(**kwargs)
    _quiet_raylet_messages()
    try:
        yield (context.dashboard_url or None) if dashboard and not address else None
    finally:
        ray.shutdown()


#: Ray's switch for "this machine can be part of a cluster" (off by default only on macOS and
#: Windows). Off, Ray's node address lookup answers 127.0.0.1, and every process of a local
#: instance (GCS, raylet, agents, workers) listens on loopback instead of all interfaces;
#: ``_node_ip_address="127.0.0.1"`` alone leaves most of them on ``*`` (measured with
#: ``ss -ltnp``, Ray 2.60). Ray reads it from the environment when ``ray_constants`` is
#: imported, so the driver's copy is switched too, for the start-up only.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _single_machine(local: bool) -> Iterator[None]:
    """Start a local instance with the cluster switch off (the processes it starts inherit the
    environment); the driver's environment and constant are restored afterwards."""
    from ray._private import ray_constants

    if not local:
        yield
        return
    previous, constant = os.environ.get(_CLUSTER_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if previous is None:
            del os.environ[_CLUSTER_SWITCH]
        else:
            os.environ[_CLUSTER_SWITCH] = previous


_HARMLESS = "PYTHON worker processes have been started on node"


def _quiet_raylet_messages() -> None:
    """Keep the driver's stdout for results (``--json``): Ray prints the raylet's messages there.

    They go to stderr instead, except the raylet's notice that many worker processes were
    started, which fold jobs and sinks taking no CPU always trigger and which is harmless.
    Patches Ray's printer in this process only (``ray._private.worker.print_to_stdstream``).
    """
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "_seld_quiet", False):
        return

    def printer(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            lines = [line for line in data.get("lines", []) if _HARMLESS not in line]
            if not lines:
                return
            data = {**data, "lines": lines, "is_err": True}
        original(data, ignore_prefix)

    printer._seld_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = printer


def run_tasks(
    fn: Callable[..., T],
    items: Sequence[I],
    args: tuple = (),
    *,
    num_cpus: float = 1,
    max_retries: int = 2,
    on_done: Callable[[I, T | None, str | None], None] | None = None,
) -> list[tuple[I, T | None, str | None]]:
    """Run ``fn(item, *args)`` as one Ray task per item, as resources allow.

    Returns ``(item, result, error)`` in completion order; ``error`` is set (and ``result`` is
    None) when the task raised or its worker died past ``max_retries`` retries, so one bad item
    never stops the rest. ``on_done`` is called as each finishes (for progress). On Ctrl-C the
    pending tasks are cancelled before the interrupt propagates.
    """
    task = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(fn)
    refs = {task.remote(item, *args): item for item in items}
    pending = list(refs)
    results = []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            item = refs[ready[0]]
            try:
                outcome = (item, ray.get(ready[0]), None)
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc
                outcome = (item, None, f"{type(cause).__name__}: {cause}")
            results.append(outcome)
            if on_done is not None:
                on_done(*outcome)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return results
