"""The registered methods (:class:`seld.methods.method.Method`), and their stages by name.

Adding a method is one module defining its ``Method`` and one line in :data:`METHODS`; a stage
name belongs to one method (it names the stage's checkpoints and predictions in a run)."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace

import torch

from seld.errors import ConfigError
from seld.methods.joint import JOINT
from seld.methods.method import Method, Stage
from seld.methods.multi_accdoa import MULTI_ACCDDOA, MULTI_ACCDOA
from seld.methods.two_stage import TWO_STAGE

#: every registered method by name: one line a method
METHODS: dict[str, Method] = {m.name: m for m in (TWO_STAGE, JOINT, MULTI_ACCDOA, MULTI_ACCDDOA)}
#: every stage of every method by name
STAGES: dict[str, Stage] = {s.name: s for m in METHODS.values() for s in m.stages}
assert len(STAGES) == sum(len(m.stages) for m in METHODS.values()), "a stage name is taken twice"


def get_method(name: str) -> Method:
    """A registered method; :class:`ConfigError` naming the registered ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def get_stage(name: str) -> Stage:
    """A registered stage; ``ValueError`` naming the registered ones otherwise."""
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(STAGES)}") from None


def stage_loss(
    stage: str,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    kind: str = "mae",
    wrap_azimuth: bool = False,
    joint_sed_weight: float = 0.8,
) -> torch.Tensor:
    """The training loss of ``stage`` with these settings (what training computes from a
    stage's TrainConfig): for a quick look at a model's loss outside training."""
    settings = SimpleNamespace(
        loss=kind, wrap_azimuth=wrap_azimuth, joint_sed_weight=joint_sed_weight
    )
    return get_stage(stage).loss(outputs, batch, settings)
