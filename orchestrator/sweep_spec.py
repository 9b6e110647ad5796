"""Sweep files: many cross-validations named once, every one checked before anything starts.

Schema::

    name: tiny-table               # the sweep's run folder (runs/<name>) and MLflow run name
    description: ...               # optional
    base: tiny                     # a config preset or YAML file (relative to this file)
    set: {train.epochs: 4}         # optional: overrides of every variant
    seeds: [0, 1, 2]               # every variant runs once per seed (a full cross-validation)
    suites: [dcase2019-regr]       # optional: metric suites every cell is also scored with; the
                                   # sweep writes one comparison per suite
    variants:                      # a list of named variants ...
      - name: joint-crnn           # letters, digits, '.', '_', '-'
        config: paper-joint-mic    # optional: another preset or file than ``base``
        set: {model.rnn_hidden: 16}
        published: joint-crnn/mic  # optional: the paper's row to set beside it
    grid:                          # ... or a grid: every combination of these values
      method: [two-stage, joint]
      data.format: [mic, foa]

A grid names each variant by its values (``joint_foa``). Overrides apply in order: the base
config, the sweep's ``set``, the variant's, the command line's, then the seed. A cell (variant x
seed) is the cv run ``runs/<sweep>/<variant>-seed<seed>``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from orchestrator.runs import validate_run_name
from seld.config import ExperimentConfig, load_config, parse_override
from seld.errors import ConfigError, SeldError
from seld.metrics.suites import SUITES

SWEEP_PACKAGE = "orchestrator.sweeps"
_KEYS = {"name", "description", "base", "set", "seeds", "suites", "variants", "grid"}
_VARIANT_KEYS = {"name", "config", "set", "published"}


class SweepError(ConfigError):
    """A sweep file that cannot run: names the file, the variant and the key."""


@dataclass(frozen=True)
class Variant:
    name: str
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    published: str = ""


@dataclass(frozen=True)
class Cell:
    """One cross-validation of a sweep: a variant with a seed."""

    variant: str
    seed: int
    experiment: ExperimentConfig

    @property
    def run(self) -> str:
        return f"{self.variant}-seed{self.seed}"


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    description: str
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    cells: tuple[Cell, ...]
    #: metric suites every cell is also scored with (besides its dataset format's own)
    suites: tuple[str, ...] = ()

    def published(self) -> dict[str, str]:
        """Variant -> the key of its published row (variants that have one)."""
        return {v.name: v.published for v in self.variants if v.published}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "seeds": list(self.seeds),
            "suites": list(self.suites),
            "variants": [
                {"name": v.name, "config": v.config, "set": v.overrides, "published": v.published}
                for v in self.variants
            ],
        }


def shipped_sweeps() -> list[str]:
    folder = resources.files(SWEEP_PACKAGE)
    names = (p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(n for n in names if n != "published")


def _read(source: str) -> tuple[dict[str, Any], str, Path]:
    looks_like_path = source.endswith((".yaml", ".yml")) or "/" in source
    if not looks_like_path:
        if source not in shipped_sweeps():
            names = ", ".join(shipped_sweeps())
            raise SweepError(f"no shipped sweep {source!r}; shipped: {names} (or a YAML file)")
        text = resources.files(SWEEP_PACKAGE).joinpath(f"{source}.yaml").read_text()
        label, folder = source, Path.cwd()
    else:
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SweepError(f"{path}: cannot read the sweep ({exc.strerror})") from None
        label, folder = str(path), path.resolve().parent
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"{label}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{label}: expected a mapping (name, base, seeds, variants or grid)")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SweepError(f"{label}: unknown key(s) {', '.join(unknown)}; allowed: {sorted(_KEYS)}")
    return data, label, folder


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{where}: expected a mapping of config paths to values")
    return dict(value)


def _slug(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _variants(data: dict[str, Any], label: str, base: str) -> list[Variant]:
    if ("variants" in data) == ("grid" in data):
        raise SweepError(f"{label}: give either 'variants' (a list) or 'grid' (a mapping)")
    if "grid" in data:
        grid = _mapping(data["grid"], f"{label}: grid")
        if not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise SweepError(f"{label}: grid: every key needs a non-empty list of values")
        return [
            Variant("_".join(_slug(v) for v in values), base, dict(zip(grid, values, strict=True)))
            for values in itertools.product(*grid.values())
        ]
    if not isinstance(data["variants"], list) or not data["variants"]:
        raise SweepError(f"{label}: variants: expected a non-empty list")
    out = []
    for i, item in enumerate(data["variants"]):
        where = f"{label}: variants[{i}]"
        if not isinstance(item, Mapping) or "name" not in item:
            raise SweepError(f"{where}: expected a mapping with a 'name'")
        unknown = sorted(set(item) - _VARIANT_KEYS)
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {', '.join(unknown)}")
        out.append(
            Variant(
                str(item["name"]),
                str(item.get("config") or base),
                _mapping(item.get("set"), f"{where}.set"),
                str(item.get("published") or ""),
            )
        )
    return out


def load_sweep(
    source: str | Path,
    overrides: Sequence[str] = (),
    *,
    seeds: Sequence[int] | None = None,
    name: str | None = None,
) -> Sweep:
    """Read a shipped sweep (``tiny-table``) or a sweep file and build the config of every
    cell; a :class:`SweepError` names the first variant whose config is invalid, so a sweep
    with a bad variant is refused before anything starts. ``overrides`` (``KEY=VALUE``) apply
    to every variant; ``seeds`` and ``name`` replace the file's."""
    data, label, folder = _read(str(source))
    base = str(data.get("base") or "")
    if not base:
        raise SweepError(f"{label}: base: a config preset or file is required")
    sweep_name = name or str(data.get("name") or Path(str(source)).stem)
    try:
        validate_run_name(sweep_name)
    except SeldError as exc:
        raise SweepError(f"{label}: name: {exc}") from None
    raw_seeds = list(seeds) if seeds is not None else data.get("seeds", [0])
    if not isinstance(raw_seeds, list) or not raw_seeds:
        raise SweepError(f"{label}: seeds: expected a non-empty list of integers")
    try:
        seed_list = tuple(dict.fromkeys(int(s) for s in raw_seeds))
    except (TypeError, ValueError):
        raise SweepError(f"{label}: seeds: expected integers, got {raw_seeds!r}") from None
    raw_suites = data.get("suites") or []
    if not isinstance(raw_suites, list):
        raise SweepError(f"{label}: suites: expected a list of metric suite names")
    for suite in raw_suites:
        if str(suite) not in SUITES:
            raise SweepError(
                f"{label}: suites: unknown metric suite {suite!r}; choose from {', '.join(SUITES)}"
            )
    common = _mapping(data.get("set"), f"{label}: set")
    command_line = dict(parse_override(item) for item in overrides)
    variants = _variants(data, label, base)
    names = [v.name for v in variants]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SweepError(f"{label}: variant names must differ: {', '.join(duplicated)}")
    cells = []
    for variant in variants:
        try:
            validate_run_name(variant.name)
        except SeldError as exc:
            raise SweepError(f"{label}: variant {variant.name!r}: {exc}") from None
        config_source = variant.config
        if ("/" in config_source or config_source.endswith((".yaml", ".yml"))) and not Path(
            config_source
        ).is_absolute():
            config_source = str(folder / config_source)
        changes = {**common, **variant.overrides, **command_line}
        try:
            experiment = load_config(config_source).with_overrides(
                changes, source=f"variant {variant.name}"
            )
            for seed in seed_list:
                cells.append(Cell(variant.name, seed, experiment.with_overrides({"seed": seed})))
        except ConfigError as exc:
            raise SweepError(f"{label}: variant {variant.name!r}: {exc}") from None
    return Sweep(
        sweep_name, label, str(data.get("description") or ""), seed_list, tuple(variants),
        tuple(cells), tuple(str(s) for s in raw_suites),
    )  # fmt: skip
