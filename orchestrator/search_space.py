"""Search spaces in YAML, validated on load and turned into Optuna define-by-run functions.

Schema::

    name: thresholds            # optional label
    metric: val_seld            # what the search minimises (optional, default val_seld)
    params:
      <name>:
        type: float | logfloat | int | categorical
        low: 0.1                # float, logfloat, int
        high: 0.9
        step: 2                 # int only, optional
        choices: [mae, mse]     # categorical only
        per_class: true         # optional: one parameter per sound class, <name>_<class>
        when: {other: value}    # optional condition: sampled only if `other` took `value`

Parameters are sampled in file order, so a condition may only refer to an earlier parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
import yaml

from seld.data.dcase import CLASSES
from seld.errors import SeldError

TYPES = ("float", "logfloat", "int", "categorical")
_KEYS = {"type", "low", "high", "step", "choices", "per_class", "when"}


class SearchSpaceError(SeldError, ValueError):
    """A search-space file that does not follow the schema; names the file and the field."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    choices: tuple[Any, ...] = ()
    per_class: bool = False
    when: Mapping[str, Any] = field(default_factory=dict)

    def names(self, classes: Sequence[str] = CLASSES) -> list[str]:
        """The parameter's names: one, or one per class (``<name>_<class>``)."""
        return [f"{self.name}_{c}" for c in classes] if self.per_class else [self.name]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.type == "float":
            return trial.suggest_float(name, self.low, self.high)
        if self.type == "logfloat":
            return trial.suggest_float(name, self.low, self.high, log=True)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1)
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    metric: str
    params: tuple[Param, ...]
    #: the classes a per-class parameter expands over (DCASE 2019's unless a run's dataset
    #: format says otherwise: :meth:`for_classes`)
    classes: tuple[str, ...] = CLASSES

    def for_classes(self, classes: Sequence[str]) -> SearchSpace:
        """The same space with its per-class parameters over ``classes``."""
        return replace(self, classes=tuple(classes))

    def define_by_run(self, trial: optuna.Trial) -> None:
        """Sample every parameter whose condition holds (for Ray Tune's ``OptunaSearch``)."""
        taken: dict[str, Any] = {}
        for param in self.params:
            if any(taken.get(k) != v for k, v in param.when.items()):
                continue
            for name in param.names(self.classes):
                taken[name] = param.suggest(trial, name)

    def searcher(self, seed: int, metric: str | None = None, mode: str = "min") -> Any:
        """Ray Tune's ``OptunaSearch`` over this space: a TPE sampler seeded with ``seed``,
        minimising (or, ``mode="max"``, maximising) ``metric`` (default: the space's own)."""
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(
            space=self.define_by_run,
            metric=metric or self.metric,
            mode=mode,
            sampler=optuna.samplers.TPESampler(seed=seed),
        )


def shipped_space(name: str) -> Path:
    """A search space shipped with the project (``search_spaces/<name>``), found through
    ``importlib.resources`` so that a wheel install finds it as well as a checkout."""
    return Path(str(resources.files("search_spaces").joinpath(name)))


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML; :class:`SearchSpaceError` names the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SearchSpaceError(f"{path}: no such search-space file") from None
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("params"), Mapping):
        raise SearchSpaceError(f"{path}: expected a mapping with a 'params' mapping")
    if not data["params"]:
        raise SearchSpaceError(f"{path}: 'params' is empty")
    params: list[Param] = []
    for name, spec in data["params"].items():
        params.append(_param(path, str(name), spec, {p.name for p in params}))
    return SearchSpace(
        str(data.get("name", path.stem)), str(data.get("metric", "val_seld")), tuple(params)
    )


def _param(path: Path, name: str, spec: Any, earlier: set[str]) -> Param:
    where = f"{path}: params.{name}"
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where}: expected a mapping, got {spec!r}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}"
        )
    kind = spec.get("type")
    if kind not in TYPES:
        raise SearchSpaceError(f"{where}.type: {kind!r} is not one of {', '.join(TYPES)}")
    when = spec.get("when", {}) or {}
    if not isinstance(when, Mapping) or any(k not in earlier for k in when):
        raise SearchSpaceError(f"{where}.when: must map earlier parameters to values, got {when!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}.choices: a non-empty list is required")
        return Param(
            name,
            kind,
            choices=tuple(choices),
            per_class=bool(spec.get("per_class")),
            when=dict(when),
        )
    low, high = spec.get("low"), spec.get("high")
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SearchSpaceError(f"{where}.{key}: a number is required, got {value!r}")
    if low >= high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if kind == "logfloat" and low <= 0:
        raise SearchSpaceError(f"{where}.low: must be positive for logfloat, got {low}")
    step = spec.get("step")
    if step is not None and (kind != "int" or not isinstance(step, int) or step < 1):
        raise SearchSpaceError(f"{where}.step: a positive integer, for int parameters only")
    return Param(
        name,
        kind,
        float(low),
        float(high),
        step,
        per_class=bool(spec.get("per_class")),
        when=dict(when),
    )
