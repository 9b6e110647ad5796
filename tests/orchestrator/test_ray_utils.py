"""The embedded Ray session: its own instance, whatever else runs on the machine."""

from __future__ import annotations

import ray
from ray.cluster_utils import Cluster

from orchestrator.ray_utils import ray_session


def test_ray_session_starts_its_own_instance_beside_another_cluster():
    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        with ray_session(num_cpus=2):
            assert ray.get_runtime_context().gcs_address != other.address
            assert ray.cluster_resources()["CPU"] == 2
        assert not ray.is_initialized()
        with ray_session(address=other.address):  # joining it is explicit
            assert ray.get_runtime_context().gcs_address == other.address
    finally:
        other.shutdown()
