"""Offline checks of a ``ray up`` cluster definition (``cluster.yaml``).

``ray up`` has no dry run and needs cloud credentials before it says anything about the file. The
checks here need neither: the JSON schema Ray ships (``ray/autoscaler/ray-schema.json``), then
Ray's own preparation and validation of the config (defaults of the provider merged in, node
types, worker counts, docker settings), then a few checks of what this project needs. Every
error names the file and the field.
"""

from __future__ import annotations

import copy
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
        raise ValueError(f"provider.type: unknown provider {kind!r} (one of {known})")
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except jsonschema.ValidationError as exc:  # a default of the provider merged in badly
        raise ValueError(f"{_field(exc.path)}: {exc.message}") from None
    except (ValueError, RuntimeError, KeyError, AssertionError) as exc:
        raise ValueError(f"Ray's config check: {exc}") from None
    return prepared


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
    would reject it. Returns warnings that do not stop ``ray up`` but will stop the cluster
    (placeholder values still to be replaced, no GPU worker type).
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
    except ValueError as exc:
        raise ClusterConfigError(f"{path}: {exc}") from None
    problems = _project_checks(prepared)
    if problems:
        raise ClusterConfigError(f"{path}: " + "; ".join(problems))

    warnings = placeholders(text)
    types = prepared["available_node_types"]
    if not any(t.get("resources", {}).get("GPU", 0) for t in types.values()):
        warnings.append("no node type declares GPU resources: `cv --gpu` would wait forever")
    return warnings
