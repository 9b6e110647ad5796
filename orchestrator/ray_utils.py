"""Starting and joining Ray: an embedded local instance by default, a cluster by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

log = logging.getLogger(__name__)


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray if this process already joined one; otherwise start a local instance
    (or join ``address``) for the duration of the block, bound to 127.0.0.1, no dashboard."""
    if ray.is_initialized():
        yield
        return
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(**kwargs)
    try:
        yield
    finally:
        ray.shutdown()
