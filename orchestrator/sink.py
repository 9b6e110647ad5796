"""One process that writes the epoch metrics of every fold job to MLflow.

Fold jobs on many processes (and nodes) do not write to the tracking store themselves: they
send each epoch's metrics to one :class:`MetricsSink` actor on the head, so a SQLite store sees
a single writer. This module imports neither MLflow nor torch at the top: every process that
receives the sink's handle imports it, and a training process should not pay for MLflow. The
sink itself never imports torch (nor ``seld.config``, which does): on the simulated GPU cluster
a sink that loaded torch at its first epoch died with "Intel oneMKL FATAL ERROR: Cannot load
libtorch_cpu.so", and every fold reporting to it failed.
"""

from __future__ import annotations

from typing import Any

import ray

from orchestrator.ray_utils import HEAD_NODE


def start_sink(tracking_uri: str):
    """A :class:`MetricsSink` on the head node, which reaches the tracking store (a server bound
    to the head's 127.0.0.1, or a local SQLite file) wherever the fold jobs run."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return MetricsSink.options(
        resources=HEAD_NODE,
        # outside any placement group it is created from (a Tune trial's, for a search)
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
    ).remote(tracking_uri)


@ray.remote(num_cpus=0)
class MetricsSink:
    """The single writer of epoch metrics, and the live status of every fold job."""

    def __init__(self, tracking_uri: str):
        from orchestrator.tracking import tracking_client

        self.client = tracking_client(tracking_uri)
        self.status: dict[str, dict[str, Any]] = {}
        self.history: dict[str, dict[int, dict[str, float]]] = {}

    def log_epoch(self, run_id: str, job: str, metrics: dict[str, float]) -> None:
        from orchestrator.tracking import log_scores

        step = int(metrics.get("epoch", 0))
        log_scores(
            self.client, run_id, "", {k: v for k, v in metrics.items() if k != "epoch"}, step
        )
        self.status[job] = {"state": "running", **metrics}
        self.history.setdefault(job, {})[step] = dict(metrics)

    def set_history(self, job: str, history: list[dict[str, float]]) -> None:
        """Epochs a job finished before this sink existed (a resumed or skipped stage)."""
        known = self.history.setdefault(job, {})
        for metrics in history:
            known.setdefault(int(metrics["epoch"]), dict(metrics))

    def get_history(self) -> dict[str, dict[int, dict[str, float]]]:
        return self.history

    def set_state(self, job: str, state: str, **extra: Any) -> None:
        self.status.setdefault(job, {}).update({"state": state, **extra})

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def get_status(self) -> dict[str, dict[str, Any]]:
        return self.status
