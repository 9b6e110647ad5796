"""Losses of the two stages: BCE for detection, masked angle errors for localisation.

Batches are those of :class:`seld.windows.WindowDataset`: ``activity`` (batch, frames, classes)
in {0, 1}, ``azimuth`` / ``elevation`` in degrees, ``mask`` (batch, frames) 0 on padding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

KINDS = ("mae", "mse")


def sed_loss(logits: torch.Tensor, activity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over valid frames and classes."""
    per_entry = F.binary_cross_entropy_with_logits(logits.float(), activity, reduction="none")
    weights = mask[..., None].expand_as(per_entry)
    return (per_entry * weights).sum() / weights.sum().clamp_min(1.0)


def _angle_error(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str
) -> torch.Tensor:
    """The seed's masked error of one angle: MAE = sum |e| w / sum w, MSE = sqrt(sum e^2 w /
    sum w); zero (with a gradient path) where nothing is active."""
    diff = pred.float() - target
    total = weight.sum()
    if kind == "mae":
        value = (diff.abs() * weight).sum() / total.clamp_min(1.0)
    else:
        value = torch.sqrt((diff**2 * weight).sum() / total.clamp_min(1.0) + 1e-12)
    return torch.where(total > 0, value, (pred.float() * 0).sum())


def doa_loss(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    target_azimuth_deg: torch.Tensor,
    target_elevation_deg: torch.Tensor,
    activity: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "mae",
) -> torch.Tensor:
    """Azimuth error + elevation error (radians) where the reference class is active, as the
    seed defines it (no azimuth wrap-around: the targets lie in [-pi, pi) and so do good
    predictions)."""
    if kind not in KINDS:
        raise ValueError(f"unknown DOA loss {kind!r}; choose one of {', '.join(KINDS)}")
    weight = activity * mask[..., None]
    to_rad = math.pi / 180.0
    return _angle_error(azimuth, target_azimuth_deg * to_rad, weight, kind) + _angle_error(
        elevation, target_elevation_deg * to_rad, weight, kind
    )


def _doa(
    outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor], kind: str
) -> torch.Tensor:
    return doa_loss(
        outputs["azimuth"],
        outputs["elevation"],
        batch["azimuth"],
        batch["elevation"],
        batch["activity"],
        batch["mask"],
        kind,
    )


def joint_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    sed_weight: float = 0.8,
    doa_weight: float = 0.2,
    kind: str = "mae",
) -> torch.Tensor:
    """The paper's one-stage baseline: 0.8 x SED + 0.2 x DOA."""
    sed = sed_loss(outputs["sed_logits"], batch["activity"], batch["mask"])
    return sed_weight * sed + doa_weight * _doa(outputs, batch, kind)


STAGES = ("sed", "doa", "joint")


def stage_loss(
    stage: str,
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    kind: str = "mae",
) -> torch.Tensor:
    if stage == "sed":
        return sed_loss(outputs["sed_logits"], batch["activity"], batch["mask"])
    if stage == "doa":
        return _doa(outputs, batch, kind)
    if stage == "joint":
        return joint_loss(outputs, batch, kind=kind)
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
