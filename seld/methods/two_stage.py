"""The two-stage method of the seed (Cao et al., DCASE 2019): a SED model detects, then a DOA
model, built from the SED model's convolutional blocks, localizes the classes it detects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from seld.methods.losses import direction_loss, sed_loss
from seld.methods.method import Method, Stage


def _detection(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], config: Any
) -> torch.Tensor:
    return sed_loss(outputs["sed_logits"], batch["activity"], batch["mask"])


def _localization(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], config: Any
) -> torch.Tensor:
    return direction_loss(outputs, batch, config.loss, config.wrap_azimuth)


TWO_STAGE = Method(
    "two-stage",
    "Two-stage SED + DOA",
    (
        Stage(
            "sed",
            "detection: BCE of the class activity; its epoch selected on (ER + 1 - F) / 2",
            _detection,
            selects_on_detection=True,
        ),
        Stage(
            "doa",
            "localization: the angle (or vector) error of the active classes, from the SED "
            "model's convolutional blocks; validated on the reference activity",
            _localization,
            starts_from="sed",
            oracle_activity=True,
        ),
    ),
    detects="sed",
    localizes="doa",
)
