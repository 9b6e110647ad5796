"""The cluster path: the ``ray up`` definition checked offline, and sweeps submitted as Ray jobs
to a real local multi-node Ray cluster (started with ``ray start``, as on a real cluster)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import ray
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cluster import (
    ClusterConfigError,
    ProviderUnavailableError,
    check_cluster_config,
    local_autoscaling_config,
    pinned_ray_version,
)

from clusters import BIN, LocalCluster

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


# --- cluster.yaml ----------------------------------------------------------------------------


def write_copy(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    edit(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_cluster_yaml_passes_rays_schema_and_checks():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    from orchestrator.cluster import ray_schema

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    jsonschema.validate(config, ray_schema())  # the schema shipped in the ray package
    prepared = prepare_config(config)  # what `ray up` does before it calls the cloud
    validate_config(prepared)
    workers = prepared["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and workers["min_workers"] == 0
    assert workers["max_workers"] == 4 == prepared["max_workers"]
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert "GPU" not in head["resources"]
    start = " ".join(prepared["head_start_ray_commands"])
    assert "mlflow server" in start and "--host 127.0.0.1" in start and "--workers 1" in start
    assert "sqlite:////mnt/seld/" in start and "--artifacts-destination /mnt/seld/" in start
    # token authentication on every node, with the launcher's token mounted on each
    for commands in (prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]):
        starts = [c for c in commands if "ray start" in c]
        assert starts and all(re.search(r"RAY_AUTH_MODE=token [^;&|]*ray start", c) for c in starts)
    assert prepared["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    setup = " ".join(prepared["setup_commands"])
    assert setup.index("install --quiet torch") < setup.index("install --quiet -e")
    # the nodes' Ray is this machine's (scripts/setup-venv.sh installs the same pin here)
    assert pinned_ray_version(prepared) == ray.__version__
    assert setup.index("'ray[default,tune,train]==") < setup.index("install --quiet -e")
    assert ".venv" in prepared["rsync_exclude"]
    text = CLUSTER_YAML.read_text().lower()
    for secret in ("aws_secret_access_key", "aws_access_key_id", "password"):
        assert secret not in text

    warnings = check_cluster_config(CLUSTER_YAML)
    assert any("ami-" in w for w in warnings) and any("fs-0123" in w for w in warnings)


def test_the_autoscaling_test_config_is_the_shipped_cluster_with_another_provider():
    shipped = yaml.safe_load(CLUSTER_YAML.read_text())
    from ray.autoscaler._private.util import prepare_config, validate_config

    local = local_autoscaling_config(CLUSTER_YAML, gcs_address="h:9", idle_timeout_minutes=2)

    validate_config(prepare_config(local))  # as the head's monitor loads it
    for key in ("max_workers", "upscaling_speed"):
        assert local[key] == shipped[key]
    head = shipped["head_node_type"]
    workers = {k: v for k, v in shipped["available_node_types"].items() if k != head}
    for name, node in workers.items():
        assert local["available_node_types"][name] == {
            "resources": node["resources"],
            "min_workers": node["min_workers"],
            "max_workers": node["max_workers"],
            "node_config": {},
        }
    assert (
        local["available_node_types"]["ray.head.default"]["resources"]
        == shipped["available_node_types"][head]["resources"]
    )
    assert local["idle_timeout_minutes"] == 2 and local["provider"]["type"] == "external"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=1),
            "available_node_types.gpu_worker.min_worker: unknown field",
        ),
        (lambda c: c.update(max_worker=4), "max_worker: unknown field"),
        (lambda c: c.update(max_workers="four"), "max_workers: 'four' is not of type 'integer'"),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="one"),
            "available_node_types.gpu_worker.resources.GPU: 'one' is not of type 'integer'",
        ),
        (lambda c: c.update(setup_commands="pip install ."), "setup_commands: 'pip install .'"),
        (
            lambda c: c.update(
                setup_commands=[re.sub(r"==[0-9.]+'", "==2.50.0'", x) for x in c["setup_commands"]]
            ),
            "runs ray 2.50.0, this machine runs ray ",
        ),
        (
            lambda c: c.update(setup_commands=[x for x in c["setup_commands"] if "ray[" not in x]),
            "installs no pinned Ray on the nodes",
        ),
        (lambda c: c.update(head_node_type="cpu_head"), "`head_node_type` must be one of"),
        (
            lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=9),
            "`max_workers` is smaller than the sum of `min_workers`",
        ),
        (lambda c: c.pop("provider"), "'provider' is a required property"),
    ],
)
def test_broken_cluster_yaml_names_the_field(tmp_path: Path, edit, message: str):
    path = write_copy(tmp_path, edit)
    with pytest.raises(ClusterConfigError, match=re.escape(message)) as info:
        check_cluster_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"type": "awz"}, "provider.type: unknown provider 'awz'"),
        ({"type": "fake_multinode"}, "provider 'fake_multinode': this Ray"),
        ({"type": "external", "module": "nowhere.Provider"}, "cannot import 'nowhere'"),
    ],
)
def test_cluster_check_of_a_provider_it_cannot_load_is_one_line_exit_2(
    tmp_path: Path, provider, message: str
):
    path = write_copy(tmp_path, lambda c: c.update(provider=provider))
    with pytest.raises(ProviderUnavailableError, match=re.escape(message)):
        check_cluster_config(path)
    done = subprocess.run(
        [str(BIN / "seld-orch"), "cluster-check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {path}: ") and message in done.stderr


def test_a_cluster_of_another_ray_version_is_refused_naming_both():
    from orchestrator.submit import SubmitError, check_cluster_version

    check_cluster_version("http://h:8265", ray.__version__, ray.__version__)
    with pytest.raises(SubmitError) as info:
        check_cluster_version("http://h:8265", "2.59.0", ray.__version__)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"the cluster at http://h:8265 runs ray 2.59.0, this machine runs ray {ray.__version__}"
    )


def test_cluster_check_command(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(app, ["cluster-check", str(CLUSTER_YAML), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    bad = write_copy(tmp_path, lambda c: c.update(max_workers="four"))
    result = runner.invoke(app, ["cluster-check", str(bad)])
    assert result.exit_code == 1
    assert "max_workers" in result.stderr and str(bad) in result.stderr.replace("\n", "")
    (tmp_path / "broken.yaml").write_text("cluster_name: [unclosed\n")
    result = runner.invoke(app, ["cluster-check", str(tmp_path / "broken.yaml")])
    assert result.exit_code == 1 and "not valid YAML" in result.stderr


# --- submitting jobs ---------------------------------------------------------------------------


def test_submit_refuses_paths_a_cluster_cannot_share(tmp_path: Path):
    from orchestrator.submit import SubmitError, check_args

    check_args("cv", ["--dataset", "/mnt/d", "--workspace=/mnt/ws", "--epochs", "1"])
    with pytest.raises(SubmitError, match="--workspace is required"):
        check_args("cv", ["--dataset", "/mnt/d"])
    with pytest.raises(SubmitError, match="--dataset data: a relative path"):
        check_args("cv", ["--dataset", "data", "--workspace", "/mnt/ws"])
    with pytest.raises(SubmitError, match="--workspace s3://bucket/ws: features and runs"):
        check_args("cv", ["--dataset", "/mnt/d", "--workspace", "s3://bucket/ws"])
    with pytest.raises(SubmitError, match="cannot submit 'train'"):
        check_args("train", ["--workspace", "/mnt/ws"])
    check_args("sweep", ["tiny-table", "--dataset", "/mnt/d", "--workspace", "/mnt/ws"])
    check_args("sweep", ["/mnt/sweeps/s.yaml", "--dataset", "/mnt/d", "--workspace", "/mnt/ws"])
    with pytest.raises(SubmitError, match=r"sweep file sweeps/s\.yaml: a relative path"):
        check_args("sweep", ["sweeps/s.yaml", "--dataset", "/mnt/d", "--workspace", "/mnt/ws"])
    # nothing listens there: the error says where it looked and what to do
    result = CliRunner().invoke(
        app,
        ["submit", "cv", "--address", "http://127.0.0.1:9", "--workspace", str(tmp_path)],
    )
    assert result.exit_code == 2
    assert "no Ray Jobs API at http://127.0.0.1:9" in result.stderr.replace("\n", " ")


def seld_orch(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "seld-orch"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.heavy  # the default run submits from outside to test_autoscaling's cluster
def test_submitted_cv_joins_the_cluster_and_is_tracked(tiny_data: Path, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    data = tiny_data
    workspace = tmp_path / "ws"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cluster = LocalCluster(head_cpus=1, workers=(1,))
    try:
        env, address = cluster.env, ["--address", cluster.dashboard]
        submitted = seld_orch(
            "submit", "cv", *address, "--dataset", str(data), "--workspace", str(workspace),
            "--folds", "1,2", "--epochs", "1", "--tracking-uri", tracking_uri,
            "--run", "submitted", env=env,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip()
        assert re.fullmatch(r"raysubmit_\w+", job), submitted.stdout

        status = seld_orch("status", job, *address, "--wait", "--json", env=env, timeout=400)
        info = json.loads(status.stdout)
        logs = seld_orch("logs", job, *address, env=env)
        assert status.returncode == 0 and info["status"] == "SUCCEEDED", logs.stdout[-3000:]
        assert "cross-validation submitted" in logs.stdout and "MLflow: run" in logs.stdout
        followed = seld_orch("logs", job, *address, "--follow", env=env)  # ends with the job
        assert followed.returncode == 0 and "MLflow: run" in followed.stdout
        listing = seld_orch("status", *address, "--json", env=env)
        assert job in [row["job_id"] for row in json.loads(listing.stdout)]  # with the warm-up
    finally:
        cluster.stop()
    assert cluster.our_processes() == []

    # the fold jobs ran on both nodes: the command joined the cluster, not a local Ray
    metrics = json.loads((workspace / "runs" / "submitted" / "metrics.json").read_text())
    nodes = {fold[stage]["node_id"] for fold in metrics["stages"].values() for stage in fold}
    assert len(nodes) == 2
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    parent = next(r for r in runs if r.data.tags.get("kind") == "cv")
    assert parent.info.run_name == "submitted" and parent.info.status == "FINISHED"
    assert "cv_seld" in parent.data.metrics
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted((r.data.tags["fold"], r.data.tags["stage"]) for r in children) == [
        ("1", "doa"), ("1", "sed"), ("2", "doa"), ("2", "sed"),
    ]  # fmt: skip
    assert all(r.info.status == "FINISHED" for r in children)
