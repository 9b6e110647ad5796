"""The one-stage baseline of the paper: one model detects and localizes, trained on a weighted
sum of the detection and localization losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from seld.methods.losses import joint_loss
from seld.methods.method import Method, Stage


def _joint(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], config: Any
) -> torch.Tensor:
    weight = config.joint_sed_weight
    return joint_loss(
        outputs,
        batch,
        sed_weight=weight,
        doa_weight=1.0 - weight,
        kind=config.loss,
        wrap_azimuth=config.wrap_azimuth,
    )


JOINT = Method(
    "joint",
    "Joint SED and DOA",
    (
        Stage(
            "joint",
            "detection and localization: w * BCE + (1 - w) * the direction error "
            "(train.joint_sed_weight w)",
            _joint,
        ),
    ),
    detects="joint",
    localizes="joint",
)
