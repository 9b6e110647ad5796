"""Experiment configs: one typed, validated, frozen description of an experiment.

An experiment config has these sections (every field, its type, range and default is in the
classes below; ``seld-orch config show NAME`` prints a resolved one)::

    name, description, seed
    method      a registered method (seld.methods.registry): two-stage (SED, then DOA from
                SED's conv blocks) | joint (one model, one stage)
    data        format: mic | foa
    features    seld.features.spectral.FeatureConfig       log-mel + GCC-PHAT or intensity vectors
    model       seld.methods.models.ModelConfig           registered architecture and its arguments
    train       seld.methods.training.TrainSettings       optimiser, budget, schedule, precision
    selection   checkpoint: best | last           which epoch's model a stage hands on
                suite                             the metric suite that scores each epoch
    inference   threshold, median_frames          post-processing of the predictions
    cv          folds, protocol                   the cross-validation

Presets are YAML files shipped in this package (``seld/configs/*.yaml``): ``paper-mic``,
``paper-foa``, ``paper-foa-iv``, ``paper-joint-mic``, ``paper-cnn-mic`` and ``tiny``. A file
may ``extends:`` another (a preset name, or a path relative to the file); its keys are merged
over the parent's, mapping by mapping. ``--set section.key=value`` overrides are applied last;
their values are read as YAML (``3e-3``, ``null``, ``[16, 32]``, ``true``).

Why pydantic: it validates the same frozen dataclasses the library already uses (no second copy
of every field), with types, ranges and choices declared next to the field, and it reports
every error with its location, which is what a user needs to fix a file. Merging is a plain
mapping merge of YAML trees; OmegaConf would add a second type system for no gain here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from seld.data.folds import PROTOCOLS, SINGLE_FOLD
from seld.errors import ConfigError
from seld.features.spectral import FeatureConfig
from seld.methods.models import ModelConfig
from seld.methods.registry import METHODS, get_method
from seld.methods.training import TrainConfig, TrainSettings
from seld.metrics.suites import SUITES

#: the registered methods' names (:data:`seld.methods.registry.METHODS`)
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
PRESET_PACKAGE = "seld.configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    #: which recordings of the dataset: the microphone array (mic) or first-order ambisonics (foa)
    format: Literal["mic", "foa"] = "mic"


class SelectionSection(_Section):
    #: which epoch's model a stage hands on and predicts with: the best on the validation split,
    #: or the last (the seed evaluates a fixed iteration)
    checkpoint: Literal["best", "last"] = "best"
    #: the metric suite (:mod:`seld.metrics.suites`) whose validation scores select the epoch
    #: (its SED error for the SED stage, its SELD aggregate otherwise); unset: the dataset
    #: format's default (``dcase2019`` on DCASE 2019 data, ``dcase2022`` on STARSS23, ...)
    suite: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SelectionSection:
        if self.suite is not None and self.suite not in SUITES:
            raise ValueError(
                f"selection.suite: unknown metric suite {self.suite!r}; choose one of "
                f"{', '.join(SUITES)}"
            )
        return self

    @model_serializer(mode="wrap")
    def _unset_suite_left_out(self, handler: Any) -> dict[str, Any]:
        # an unset suite is left out, so the configs (and hashes) of runs made before the key
        # existed stay what they were
        data = handler(self)
        if data.get("suite") is None:
            data.pop("suite", None)
        return data


class InferenceSection(_Section):
    #: SED threshold: a class is active in a frame where its probability exceeds it
    threshold: float = Field(0.3, gt=0, lt=1)
    #: median filter over label frames (20 ms) of each class's detections; 1 = off
    median_frames: int = Field(1, ge=1, le=101)
    #: test-time augmentation: predict each recording under every channel symmetry of the array
    #: (8 for mic, 16 for foa; :mod:`seld.features.augment`), map each view's directions back, and
    #: average probabilities and directions (off in the paper presets, as in the seed)
    tta: bool = False


class CVSection(_Section):
    #: the folds to run (each 1-4; a single-fold protocol has only fold 1)
    folds: tuple[int, ...] = (1, 2, 3, 4)
    #: which recordings each fold trains, validates and tests on (:mod:`seld.data.folds`);
    #: ``seed`` validates on the test split and is labelled leaky
    protocol: str = "dcase2019"

    @model_validator(mode="after")
    def _check(self) -> CVSection:
        if not self.folds or any(k not in (1, 2, 3, 4) for k in self.folds):
            raise ValueError(f"cv.folds: each fold is 1, 2, 3 or 4, got {list(self.folds)}")
        if len(set(self.folds)) != len(self.folds):
            raise ValueError(f"cv.folds: a fold is listed twice in {list(self.folds)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"cv.protocol: {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.protocol in SINGLE_FOLD and self.folds != (1,):
            raise ValueError(
                f"cv.folds: the {self.protocol} protocol has one fold, [1], not {list(self.folds)}"
            )
        return self


class ExperimentConfig(_Section):
    """A whole experiment. Build it with :func:`load_config`; it is frozen."""

    #: a label for tables and MLflow (not part of the config hash)
    name: str = ""
    #: one line on what the experiment is (not part of the config hash)
    description: str = ""
    #: the random seed of training (initialisation, shuffling, augmentation)
    seed: int = Field(0, ge=0)
    #: a registered method (:mod:`seld.methods.registry`)
    method: MethodName = "two-stage"
    data: DataSection = DataSection()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainSettings = TrainSettings()
    selection: SelectionSection = SelectionSection()
    inference: InferenceSection = InferenceSection()
    cv: CVSection = CVSection()

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if self.features.kind == "logmel_iv" and self.data.format != "foa":
            raise ValueError(
                "features.kind: logmel_iv (intensity vectors) needs data.format foa; "
                "use logmel_gcc for mic"
            )
        return self

    @property
    def stages(self) -> tuple[str, ...]:
        """The method's stages, in training order."""
        return get_method(self.method).stage_names

    @property
    def format(self) -> str:
        return self.data.format

    def train_config(self, stage: str) -> TrainConfig:
        """The training config of one stage of this experiment."""
        if stage not in self.stages:
            raise ValueError(f"method {self.method} has no stage {stage!r} ({self.stages})")
        return TrainConfig(
            **_fields(self.train),
            stage=stage,
            model=self.model.name,
            model_kwargs=self.model.kwargs(),
            seed=self.seed,
            selection=self.selection.checkpoint,
            sed_threshold=self.inference.threshold,
            selection_suite=self.selection.suite,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples): YAML, JSON and Ray payloads."""
        return self.model_dump(mode="json")

    def leaves(self) -> dict[str, Any]:
        """Every leaf under its dotted path (``train.lr``); lists stay whole."""
        return flatten(self.to_dict())

    def hash(self) -> str:
        """A short hash of everything but the name and description."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "") -> ExperimentConfig:
        """A copy with dotted-path values replaced (a search trial, a sweep variant)."""
        tree = self.to_dict()
        for key, value in overrides.items():
            _set_path(tree, key, value)
        return validate_config(tree, source or "overrides", set(overrides))


def _fields(settings: TrainSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in TrainSettings.__dataclass_fields__}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def preset_names() -> list[str]:
    folder = resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(
    source: str | Path = "tiny", overrides: Sequence[str] = (), *, base_dir: Path | None = None
) -> ExperimentConfig:
    """A preset name or a YAML file, its ``extends`` chain merged, then ``KEY=VALUE``
    overrides; validated. Raises :class:`ConfigError` naming the file and the dotted key."""
    tree, label = _load_tree(str(source), base_dir or Path.cwd(), ())
    touched = set()
    for item in overrides:
        key, value = parse_override(item)
        _set_path(tree, key, value)
        touched.add(key)
    return validate_config(tree, label, touched)


def parse_override(item: str) -> tuple[str, Any]:
    """``section.key=value`` -> (dotted key, value read as YAML)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. train.lr=5e-4)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
    return key, value


def validate_config(
    tree: Mapping[str, Any], label: str, overridden: set[str] | None = None
) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(dict(tree))
    except ValidationError as exc:
        problems = [_describe(error, overridden or set()) for error in exc.errors()]
        raise ConfigError(f"{label}: " + "; ".join(problems)) from None


def _describe(error: Mapping[str, Any], overridden: set[str]) -> str:
    path = [str(p) for p in error["loc"]]
    key = ".".join(path)
    where = " (from --set)" if key in overridden else ""
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = _valid_keys(path[:-1])
        close = difflib.get_close_matches(path[-1], valid, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{key}: unknown key{where}; {hint}valid keys: {', '.join(valid)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    first, _, rest = message.partition(" ")
    if error["type"] == "value_error" and first in _valid_keys(path):
        key, message = f"{key}.{first}", rest  # a dataclass's own check names its field
    if error["type"] == "value_error" and key and not message.startswith(path[-1]):
        return f"{key}: {message}{where}"
    if error["type"] == "value_error":
        return f"{message}{where}"
    return f"{key}: {message}{where} (got {error.get('input')!r})"


def _valid_keys(path: Sequence[str]) -> list[str]:
    node: Any = ExperimentConfig().to_dict()
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return []
        node = node[part]
    return sorted(node) if isinstance(node, Mapping) else []


def _load_tree(source: str, base_dir: Path, seen: tuple[str, ...]) -> tuple[dict, str]:
    text, label, folder = _read_source(source, base_dir)
    if label in seen:
        raise ConfigError(f"{label}: extends itself through {' -> '.join([*seen, label])}")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML ({exc})") from None
    tree = {} if tree is None else tree
    if not isinstance(tree, dict):
        raise ConfigError(f"{label}: expected a mapping of sections, got {type(tree).__name__}")
    parent = tree.pop("extends", None)
    if parent is None:
        return tree, label
    if not isinstance(parent, str):
        raise ConfigError(f"{label}: extends: a preset name or a file path, got {parent!r}")
    base, _ = _load_tree(parent, folder, (*seen, label))
    if "name" not in tree:
        base.pop("name", None)
    return merge(base, tree), label


def _read_source(source: str, base_dir: Path) -> tuple[str, str, Path]:
    """(text, label for messages, folder that relative ``extends`` start from)."""
    looks_like_path = source.endswith((".yaml", ".yml")) or "/" in source
    if not looks_like_path:
        names = preset_names()
        if source not in names:
            raise ConfigError(
                f"no config preset {source!r}; presets: {', '.join(names)} (or a YAML file path)"
            )
        text = resources.files(PRESET_PACKAGE).joinpath(f"{source}.yaml").read_text()
        return text, source, base_dir
    path = Path(source) if Path(source).is_absolute() else base_dir / source
    try:
        return path.read_text(), str(path), path.parent
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mapping by mapping; anything else in ``top`` replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_path(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {} if child is None else child
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is a value, not a section")
        node = child
    node[last] = value
