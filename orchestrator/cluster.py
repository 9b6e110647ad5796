"""Offline checks of a ``ray up`` cluster definition (``cluster.yaml``).

``ray up`` has no dry run and needs cloud credentials before it says anything about the file. The
checks here need neither: the JSON schema Ray ships (``ray/autoscaler/ray-schema.json``), then
Ray's own preparation and validation of the config (defaults of the provider merged in, node
types, worker counts, docker settings), then a few checks of what this project needs. Every
error names the file and the field.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from seld.errors import ClusterError

#: values in the shipped cluster.yaml that a user must replace before ``ray up``
PLACEHOLDERS = {
    "ami-0123456789abcdef0": "an AMI id of your region",
    "123456789012": "your AWS account id (instance profile ARN)",
    "fs-0123456789abcdef0": "your EFS file system id",
    "your-bucket": "your S3 bucket",
}


class ClusterConfigError(ClusterError, ValueError):
    """A cluster definition that ``ray up`` would reject (or that cannot run this project)."""


class ProviderUnavailableError(ClusterError, RuntimeError):
    """A cluster definition whose node provider this Ray cannot load, so nothing past the schema
    can be checked here (an unknown provider type, a provider module that does not import, a
    provider whose defaults are missing from the installed Ray)."""


#: the Ray that ``setup_commands`` install on the nodes, e.g. ``ray[default,tune,train]==2.60.0``
RAY_PIN = re.compile(r"\bray(\[[a-z,]+\])?==(?P<version>[0-9][0-9a-z.]*)")


def pinned_ray_version(config: dict[str, Any]) -> str | None:
    """The Ray version the nodes install (the first ``ray==X`` in the setup commands)."""
    for command in config.get("setup_commands") or []:
        found = RAY_PIN.search(str(command))
        if found:
            return found["version"]
    return None


def version_problem(where: str, theirs: str | None, ours: str) -> str | None:
    """A one-line complaint when ``theirs`` (a cluster's Ray) is not ``ours`` (this machine's)."""
    if theirs is None:
        return (
            f"{where} installs no pinned Ray on the nodes: they would run whatever "
            f"`ray>=...` resolves to, not ray {ours} of this machine (add "
            f"'ray[default,tune,train]=={ours}' to setup_commands)"
        )
    if theirs != ours:
        return (
            f"{where} runs ray {theirs}, this machine runs ray {ours}: `ray up`, `seld-orch "
            f"submit` and the cluster need the same Ray (install ray=={theirs} here, or change "
            "the pin)"
        )
    return None


def ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path]):
        where = list(error.path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            patterns = list(error.schema.get("patternProperties", {}))
            for key in error.instance:
                if key not in known and not any(re.search(p, key) for p in patterns):
                    problems.append(
                        f"{_field([*where, key])}: unknown field (allowed here: "
                        f"{', '.join(sorted(known)) or 'none'})"
                    )
        elif error.validator == "required":
            problems.append(f"{_field(where)}: {error.message}")
        else:
            problems.append(f"{_field(where)}: {error.message}")
    return problems


def _ray_checks(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own config preparation and validation, as ``ray up`` runs them before it calls the
    cloud; returns the prepared config (defaults merged in)."""
    import jsonschema
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config, validate_config

    kind = config["provider"]["type"]
    if kind not in _NODE_PROVIDERS:
        known = ", ".join(sorted(_NODE_PROVIDERS))
        raise ProviderUnavailableError(
            f"provider.type: unknown provider {kind!r} (one of {known}); cannot check further"
        )
    if kind == "external":
        module = str(config["provider"].get("module", "")).rpartition(".")[0]
        try:
            importlib.import_module(module)
        except (ImportError, ValueError) as exc:
            raise ProviderUnavailableError(
                f"provider.module: cannot import {module or '(none)'!r} ({exc}); "
                "cannot check further"
            ) from None
    try:
        prepared = prepare_config(copy.deepcopy(config))
    except (OSError, ImportError) as exc:  # e.g. a provider's defaults missing from the wheel
        reason = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        missing = getattr(exc, "filename", None)
        raise ProviderUnavailableError(
            f"provider {kind!r}: this Ray ({_ray_version()}) cannot load its defaults "
            f"({reason}{f' {missing}' if missing else ''}); cannot check further"
        ) from None
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as exc:  # a default of the provider merged in badly
        raise ValueError(f"{_field(exc.path)}: {exc.message}") from None
    except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
        raise ValueError(f"Ray's config check: {exc}") from None
    return prepared


def _ray_version() -> str:
    import ray

    return ray.__version__


def _project_checks(config: dict[str, Any]) -> list[str]:
    """Problems for this project: fold jobs need GPU workers (or at least CPUs) somewhere."""
    problems = []
    types = config.get("available_node_types", {})
    head = config.get("head_node_type")
    workers = {name: t for name, t in types.items() if name != head}
    if not workers:
        problems.append("available_node_types: no worker node type (fold jobs need workers)")
    for name, node in workers.items():
        low, high = node.get("min_workers", 0), node.get("max_workers", config["max_workers"])
        if low > high:
            problems.append(f"available_node_types.{name}: min_workers {low} > max_workers {high}")
    return problems


def placeholders(text: str) -> list[str]:
    """Placeholder values still in the file, each with its line number."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        content = line.split("#", 1)[0]
        for value, meaning in PLACEHOLDERS.items():
            if value in content:
                found.append(f"line {number}: {value!r} is a placeholder for {meaning}")
    return found


def check_cluster_config(path: Path | str) -> list[str]:
    """Check a ``ray up`` cluster definition offline.

    Raises :class:`ClusterConfigError` naming the file and every broken field when ``ray up``
    would reject it (or the nodes would run another Ray than this machine), and
    :class:`ProviderUnavailableError` when this Ray cannot load the config's node provider.
    Returns warnings that do not stop ``ray up`` but will stop the cluster (placeholder values
    still to be replaced, no GPU worker type, no token to mount).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClusterConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ClusterConfigError(f"{path}:{where} not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path}: expected a mapping of cluster settings")

    problems = _schema_problems(config, ray_schema())
    if problems:
        raise ClusterConfigError(f"{path}: " + "; ".join(problems))
    try:
        prepared = _ray_checks(config)
    except ProviderUnavailableError as exc:
        raise ProviderUnavailableError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise ClusterConfigError(f"{path}: {exc}") from None
    problems = _project_checks(prepared)
    mismatch = version_problem(str(path), pinned_ray_version(prepared), _ray_version())
    if mismatch:
        problems.append(mismatch.removeprefix(f"{path} "))
    if problems:
        raise ClusterConfigError(f"{path}: " + "; ".join(problems))

    warnings = placeholders(text)
    types = prepared["available_node_types"]
    if not any(t.get("resources", {}).get("GPU", 0) for t in types.values()):
        warnings.append("no node type declares GPU resources: `cv --gpu` would wait forever")
    for remote, local in (config.get("file_mounts") or {}).items():
        if remote.endswith("/.ray/auth_token") and not Path(local).expanduser().exists():
            warnings.append(
                f"file_mounts.{remote}: no token at {local} yet (make it before `ray up`: "
                "`.venv/bin/ray get-auth-token --generate`)"
            )
    return warnings


#: Ray's fake multi-node provider, loaded as an external module (its ``type: fake_multinode``
#: alias needs a defaults file that the Ray 2.60 wheel lacks)
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
#: the id the fake provider gives the head (workers count up from it)
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
FAKE_HEAD_TYPE = "ray.head.default"


def local_autoscaling_config(
    path: Path | str, *, gcs_address: str, idle_timeout_minutes: float
) -> dict[str, Any]:
    """The cluster definition at ``path`` as an autoscaling config for Ray's fake multi-node
    provider: Ray's real autoscaler on this machine, whose "nodes" are local raylets with the
    node types' resources (GPUs included, as logical resources).

    The worker node types keep their resources and min/max workers, and the cluster its
    ``max_workers`` and ``upscaling_speed``; only the provider, the head type's name (the fake
    provider's own) and the idle timeout differ. Start the head with the head type's resources
    (:func:`head_resources`), ``RAY_FAKE_CLUSTER=1`` and ``--autoscaling-config`` of this config.
    """
    config = yaml.safe_load(Path(path).read_text())
    types, head = config["available_node_types"], config["head_node_type"]
    node_types: dict[str, Any] = {}
    for name, node in types.items():
        node_types[FAKE_HEAD_TYPE if name == head else name] = {
            "resources": dict(node.get("resources", {})),
            "min_workers": node.get("min_workers", 0),
            "max_workers": node.get("max_workers", config["max_workers"]),
            "node_config": {},
        }
    return {
        "cluster_name": f"{config['cluster_name']}-local",
        "max_workers": config["max_workers"],
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "external",
            "module": FAKE_PROVIDER,
            "gcs_address": gcs_address,
            "head_node_id": FAKE_HEAD_NODE_ID,
            "launch_multiple": True,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ray"},  # never used: the fake provider runs no commands
        "available_node_types": node_types,
        "head_node_type": FAKE_HEAD_TYPE,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def head_resources(config: dict[str, Any]) -> dict[str, float]:
    """The head node type's resources in a config of :func:`local_autoscaling_config`."""
    return dict(config["available_node_types"][FAKE_HEAD_TYPE]["resources"])
