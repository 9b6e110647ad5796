"""Losses: BCE for detection, masked angle (or vector) errors for localisation, and their
weighted sum for one model doing both. The methods (:mod:`seld.methods.registry`) build their
stages' losses from these.

Batches are those of :class:`seld.features.windows.WindowDataset`: ``activity`` (batch, frames,
classes) in {0, 1}, ``azimuth`` / ``elevation`` (batch, frames, classes) in degrees, ``mask``
(batch, frames) 0 on padding. Model outputs (:mod:`seld.methods.models`): ``sed_logits`` and
``azimuth`` / ``elevation`` in radians, (batch, frames, classes). Losses are computed in float32
whatever the outputs' dtype, so they are safe to call on autocast (bf16/fp16) outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

KINDS = ("mae", "mse")


def sed_loss(logits: torch.Tensor, activity: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over valid (``mask`` 1) frames and all classes.

    The seed applies a sigmoid in the model and averages BCE over every entry; without padding
    the two agree. Returns 0 (with a gradient path) when no frame is valid.
    """
    per_entry = F.binary_cross_entropy_with_logits(
        logits.float(), activity.float(), reduction="none"
    )
    weight = mask.float()[..., None].expand_as(per_entry)
    return (per_entry * weight).sum() / weight.sum().clamp_min(1.0)


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angles (radians) into [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _angle_error(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str, wrap: bool
) -> torch.Tensor:
    """The seed's masked error of one angle: MAE = sum(|e| w) / sum(w), MSE = sqrt(sum(e^2 w) /
    sum(w)); 0, with a gradient path, where ``weight`` is all zero."""
    diff = pred.float() - target
    if wrap:
        diff = _wrap(diff)
    total = weight.sum()
    if kind == "mae":
        value = (diff.abs() * weight).sum() / total.clamp_min(1.0)
    else:  # the epsilon keeps sqrt's gradient finite at a perfect fit
        value = torch.sqrt((diff.square() * weight).sum() / total.clamp_min(1.0) + 1e-20)
    return torch.where(total > 0, value, (pred.float() * 0).sum())


def doa_loss(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    target_azimuth_deg: torch.Tensor,
    target_elevation_deg: torch.Tensor,
    activity: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "mae",
    wrap_azimuth: bool = False,
) -> torch.Tensor:
    """Azimuth error + elevation error, in radians, over entries whose reference class is active.

    ``azimuth``/``elevation``: predictions in radians; targets in degrees (converted here); all
    (batch, frames, classes). ``activity * mask`` selects the entries. As in the seed, each
    angle's error is averaged over the N selected entries and the two are added:
    ``mae = sum|d_azi| / N + sum|d_ele| / N``; ``mse = sqrt(sum d_azi^2 / N) + sqrt(sum d_ele^2 /
    N)``. The seed does not wrap the azimuth difference (targets lie in [-pi, pi), and a model
    trained this way predicts there too); ``wrap_azimuth=True`` wraps it into [-pi, pi) so that
    -179 and 179 degrees are 2 degrees apart. With N = 0 the result is 0 with a gradient path
    (the seed divided by zero).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown DOA loss {kind!r}; choose one of {', '.join(KINDS)}")
    weight = activity.float() * mask.float()[..., None]
    to_rad = math.pi / 180.0
    azi = _angle_error(azimuth, target_azimuth_deg.float() * to_rad, weight, kind, wrap_azimuth)
    ele = _angle_error(elevation, target_elevation_deg.float() * to_rad, weight, kind, False)
    return azi + ele


def target_vectors(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """Unit vectors (x front, y left, z up) of directions in degrees: (...,) -> (..., 3)."""
    azi, ele = torch.deg2rad(azimuth_deg.float()), torch.deg2rad(elevation_deg.float())
    return torch.stack(
        [torch.cos(ele) * torch.cos(azi), torch.cos(ele) * torch.sin(azi), torch.sin(ele)], -1
    )


def xyz_loss(
    xyz: torch.Tensor,
    target_azimuth_deg: torch.Tensor,
    target_elevation_deg: torch.Tensor,
    activity: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "mse",
) -> torch.Tensor:
    """Error of Cartesian direction outputs ``xyz`` (batch, frames, classes, 3) against the
    targets' unit vectors, over entries whose reference class is active: ``mse`` the mean squared
    Euclidean distance, ``mae`` the mean Euclidean distance. It has no azimuth discontinuity."""
    if kind not in KINDS:
        raise ValueError(f"unknown DOA loss {kind!r}; choose one of {', '.join(KINDS)}")
    weight = activity.float() * mask.float()[..., None]
    squared = (xyz.float() - target_vectors(target_azimuth_deg, target_elevation_deg)).square()
    distance = squared.sum(-1)
    if kind == "mae":  # the epsilon keeps sqrt's gradient finite at a perfect fit
        distance = torch.sqrt(distance + 1e-12)
    total = weight.sum()
    value = (distance * weight).sum() / total.clamp_min(1.0)
    return torch.where(total > 0, value, (xyz.float() * 0).sum())


def direction_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    kind: str,
    wrap_azimuth: bool = False,
) -> torch.Tensor:
    """The DOA loss of the model's output form: Cartesian when it has ``xyz``, else angles."""
    targets = (batch["azimuth"], batch["elevation"], batch["activity"], batch["mask"])
    if "xyz" in outputs:
        return xyz_loss(outputs["xyz"], *targets, kind=kind)
    return doa_loss(
        outputs["azimuth"], outputs["elevation"], *targets, kind=kind, wrap_azimuth=wrap_azimuth
    )


def joint_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, torch.Tensor],
    sed_weight: float = 0.8,
    doa_weight: float = 0.2,
    kind: str = "mae",
    wrap_azimuth: bool = False,
) -> torch.Tensor:
    """The paper's one-stage baseline: ``0.8 * sed_loss + 0.2 * doa_loss``."""
    sed = sed_loss(outputs["sed_logits"], batch["activity"], batch["mask"])
    return sed_weight * sed + doa_weight * direction_loss(outputs, batch, kind, wrap_azimuth)
