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


def test_the_metrics_sink_never_loads_torch():
    """Every process that receives the sink's handle imports its module, and the sink writes
    through orchestrator.tracking: neither loads torch (a sink that did died on the simulated
    GPU cluster: "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so")."""
    import subprocess
    import sys

    code = (
        "import sys, orchestrator.sink, orchestrator.tracking\n"
        "print(sorted(m for m in ('torch', 'seld.config') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "[]", out.stdout
