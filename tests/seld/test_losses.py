from __future__ import annotations

import math

import pytest
import torch

from seld.methods.losses import doa_loss, joint_loss, sed_loss
from seld.methods.registry import stage_loss

FRAMES, CLASSES = 4, 11


def make_batch(active=()):
    """A one-window batch; ``active`` holds (frame, class, azimuth_deg, elevation_deg)."""
    batch = {
        "activity": torch.zeros(1, FRAMES, CLASSES),
        "azimuth": torch.zeros(1, FRAMES, CLASSES),
        "elevation": torch.zeros(1, FRAMES, CLASSES),
        "mask": torch.ones(1, FRAMES),
    }
    for t, c, azi, ele in active:
        batch["activity"][0, t, c] = 1
        batch["azimuth"][0, t, c] = azi
        batch["elevation"][0, t, c] = ele
    return batch


def outputs(sed=0.0, azi=0.0, ele=0.0, requires_grad=False):
    return {
        key: torch.full((1, FRAMES, CLASSES), value, requires_grad=requires_grad)
        for key, value in (("sed_logits", sed), ("azimuth", azi), ("elevation", ele))
    }


def doa(out, batch, **kwargs):
    return doa_loss(
        out["azimuth"],
        out["elevation"],
        batch["azimuth"],
        batch["elevation"],
        batch["activity"],
        batch["mask"],
        **kwargs,
    )


def test_sed_loss_of_logit_zero_is_ln2_and_padding_is_ignored():
    batch = make_batch(active=[(0, 1, 0, 0)])
    logits = torch.zeros(1, FRAMES, CLASSES)
    assert sed_loss(logits, batch["activity"], batch["mask"]).item() == pytest.approx(math.log(2))
    batch["mask"][0, 2:] = 0
    logits[0, 2:] = 50.0  # padded frames: a huge error there is ignored
    assert sed_loss(logits, batch["activity"], batch["mask"]).item() == pytest.approx(math.log(2))


def test_sed_loss_hand_computed_and_stable():
    activity = torch.tensor([[[1.0, 0.0]]])
    logits = torch.tensor([[[2.0, -1.0]]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert sed_loss(logits, activity, torch.ones(1, 1)).item() == pytest.approx(expected)
    extreme = torch.tensor([[[-200.0, 200.0]]], dtype=torch.bfloat16)  # AMP outputs, saturated
    assert sed_loss(extreme, activity, torch.ones(1, 1)).item() == pytest.approx(200.0)


def test_sed_loss_without_valid_frames_is_zero_with_grad():
    logits = torch.randn(1, FRAMES, CLASSES, requires_grad=True)
    loss = sed_loss(logits, torch.ones(1, FRAMES, CLASSES), torch.zeros(1, FRAMES))
    assert loss.item() == 0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_doa_loss_is_zero_for_exact_directions():
    batch = make_batch(active=[(0, 1, 90, 10), (2, 5, -30, 0)])
    out = outputs()
    out["azimuth"][0, 0, 1], out["elevation"][0, 0, 1] = math.radians(90), math.radians(10)
    out["azimuth"][0, 2, 5] = math.radians(-30)
    for kind in ("mae", "mse"):
        assert doa(out, batch, kind=kind).item() == pytest.approx(0, abs=1e-6)


def test_doa_loss_mae_and_mse_hand_computed_where_active_only():
    batch = make_batch(active=[(0, 1, 90, 10), (2, 5, -30, 0)])
    out = outputs(requires_grad=False)
    out["azimuth"][0, 3, 7] = 99.0  # an inactive class: ignored
    out["azimuth"].requires_grad_(True)
    # the seed's normalisation: each angle's error averaged over the 2 active entries, then added
    mae = (math.radians(90) + math.radians(30)) / 2 + math.radians(10) / 2
    loss = doa(out, batch, kind="mae")
    assert loss.item() == pytest.approx(mae, rel=1e-6)
    loss.backward()
    grad = out["azimuth"].grad
    assert grad[0, 0, 1] == pytest.approx(-0.5) and grad[0, 2, 5] == pytest.approx(0.5)
    assert torch.count_nonzero(grad) == 2
    mse = math.sqrt((math.radians(90) ** 2 + math.radians(30) ** 2) / 2) + math.sqrt(
        math.radians(10) ** 2 / 2
    )
    assert doa(out, batch, kind="mse").item() == pytest.approx(mse, rel=1e-5)
    batch["mask"][0, 2] = 0  # a padded frame: its active entry no longer counts
    assert doa(out, batch).item() == pytest.approx(math.radians(90) + math.radians(10), rel=1e-6)


def test_doa_loss_azimuth_wrap_is_optional():
    batch = make_batch(active=[(0, 0, 179, 0)])
    out = outputs()
    out["azimuth"][0, 0, 0] = math.radians(-179)
    assert doa(out, batch).item() == pytest.approx(math.radians(358), rel=1e-5)  # the seed's
    assert doa(out, batch, wrap_azimuth=True).item() == pytest.approx(math.radians(2), rel=1e-4)


def test_doa_loss_without_active_entries_is_zero_with_grad():
    out = outputs(azi=1.0, ele=-1.0, requires_grad=True)
    for kind in ("mae", "mse"):
        loss = doa(out, make_batch(), kind=kind)
        assert loss.item() == 0 and loss.requires_grad
        loss.backward()
        assert torch.isfinite(out["azimuth"].grad).all()


def test_doa_loss_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown DOA loss 'huber'; choose one of mae, mse"):
        doa(outputs(), make_batch(), kind="huber")


def test_joint_loss_and_stage_dispatch():
    batch = make_batch(active=[(1, 2, 60, 0)])
    out = outputs()
    sed, direction = math.log(2), math.radians(60)
    assert joint_loss(out, batch).item() == pytest.approx(0.8 * sed + 0.2 * direction)
    assert joint_loss(out, batch, 0.5, 0.5).item() == pytest.approx(0.5 * (sed + direction))
    assert stage_loss("sed", out, batch).item() == pytest.approx(sed)
    assert stage_loss("doa", out, batch).item() == pytest.approx(direction)
    assert stage_loss("doa", out, batch, "mse").item() == pytest.approx(direction)
    assert stage_loss("joint", out, batch).item() == pytest.approx(0.8 * sed + 0.2 * direction)
    with pytest.raises(ValueError, match="unknown stage 'both'; choose one of sed, doa, joint"):
        stage_loss("both", out, batch)


def test_wrap_aware_doa_loss_reaches_the_training_loss():
    """-175 predicted for a target of 175 costs 10 degrees with the wrap, 350 without."""
    batch = make_batch(active=[(0, 0, 175, 0)])
    out = outputs()
    out["azimuth"][0, 0, 0] = math.radians(-175)
    assert stage_loss("doa", out, batch).item() == pytest.approx(math.radians(350), rel=1e-5)
    wrapped = stage_loss("doa", out, batch, wrap_azimuth=True).item()
    assert math.degrees(wrapped) == pytest.approx(10.0, rel=1e-4)
    joint = stage_loss("joint", out, batch, wrap_azimuth=True).item()
    sed = sed_loss(out["sed_logits"], batch["activity"], batch["mask"]).item()
    assert joint == pytest.approx(0.8 * sed + 0.2 * wrapped, rel=1e-5)


def test_xyz_loss_is_the_distance_between_unit_vectors_where_active():
    batch = make_batch(active=[(0, 0, 90, 0), (1, 2, 0, 90)])
    xyz = torch.zeros(1, FRAMES, CLASSES, 3)
    xyz[0, 0, 0] = torch.tensor([0.0, 1.0, 0.0])  # exact: left
    xyz[0, 1, 2] = torch.tensor([1.0, 0.0, 0.0])  # front for up: sqrt(2) apart
    xyz[0, 3, 5] = torch.tensor([9.0, 9.0, 9.0])  # an inactive entry does not count
    out = {"xyz": xyz, "sed_logits": torch.zeros(1, FRAMES, CLASSES)}
    assert stage_loss("doa", out, batch, "mse").item() == pytest.approx(2.0 / 2, rel=1e-5)
    assert stage_loss("doa", out, batch, "mae").item() == pytest.approx(math.sqrt(2) / 2, 1e-5)
    # no discontinuity: -179 and 179 degrees are 2 degrees apart
    near = make_batch(active=[(0, 0, 179, 0)])
    xyz = torch.zeros(1, FRAMES, CLASSES, 3)
    xyz[0, 0, 0] = torch.tensor([math.cos(math.radians(-179)), math.sin(math.radians(-179)), 0])
    loss = stage_loss("doa", {"xyz": xyz}, near, "mae").item()
    assert loss == pytest.approx(2 * math.sin(math.radians(1)), rel=1e-3)
